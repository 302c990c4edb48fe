"""molpy's exit statuses, defined once (the guest's own exit code passes through as is)."""

MISMATCH = 1            # `session verify`: the session would not resume
USAGE = 2               # bad input: a molrc, a file, an argument; one line says which
FAULT = 3               # the guest faulted; a report says how
BUG = 70                # a molpy bug (sysexits' EX_SOFTWARE): its traceback went to a file
SIGNAL_BASE = 128       # a signal ended molpy: 128 + its number (130 SIGINT, 143 SIGTERM ...)
INTERRUPT = SIGNAL_BASE + 2
BROKEN_PIPE = SIGNAL_BASE + 13   # what a shell reports when the reader went away (SIGPIPE)
