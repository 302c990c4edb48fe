"""Every limit the molrc reader enforces (molrc files may be crafted: nothing is unbounded).

MOL's own limits are kept where they are part of the grammar (include nesting,
``${}`` nesting); where MOL cut text silently (4095-byte lines, 255-byte words) molpy
takes more and refuses what is beyond its own, larger bound with a message.
"""

MAX_FILE_BYTES = 1 << 20          # one molrc file (MOL's largest shipped file is ~6 KB)
MAX_TOTAL_BYTES = 8 << 20         # all files read for one configuration, includes counted each time
MAX_FILES = 256                   # files opened for one configuration (an include fan-out bomb stops here)
MAX_LINE_CHARS = 64 << 10         # one line after joining '\' continuations (MOL: 4095 bytes, longer lines cut)
MAX_WORD_CHARS = 4096             # one word after ${} expansion (MOL: 255, longer words cut)
MAX_EXPANSION_WORK = 16 << 20     # characters scanned + produced by ${} expansion for one configuration
MAX_EXPANSION_NESTING = 10        # MOL: a value's own ${} are expanded 10 levels deep, then left as they are
MAX_INCLUDES_OPEN = 7             # MOL: an include is refused when 7 are already open ("depth > 6")
