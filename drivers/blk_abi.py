"""MOL's ablk interface as a guest sees it: OSI selectors, CNTRL commands, descriptor
and DISK_INFO flags, the error codes molpy answers with (docs/osi-abi.md)."""

OSI_ABLK_RING_SETUP = 79
OSI_ABLK_CNTRL = 80
OSI_ABLK_DISK_INFO = 81
OSI_ABLK_KICK = 82
OSI_ABLK_IRQ_ACK = 83
OSI_ABLK_SYNC_READ = 84
OSI_ABLK_SYNC_WRITE = 85
OSI_ABLK_BLESS_DISK = 86

# CNTRL commands (second argument)
CNTRL_RESET = 1
CNTRL_STOP = 2
CNTRL_START = 3
CNTRL_ROUTE_IRQ = 4
CNTRL_GET_EVENTS = 5

# descriptor flags
REQ_READ = 1
REQ_WRITE = 2
REQ_RAISE_IRQ = 4
REQ_SG_BUF = 8
REQ_CNTRL_MASK = 0xFFFFFF00      # control requests live in the bits from 256 up
REQ_NOP = 1 << 8
REQ_EJECT = 2 << 8
REQ_LOCKDOOR = 3 << 8

# DISK_INFO flags (r5)
INFO_READ_ONLY = 1
INFO_REMOVABLE = 2
INFO_MEDIA_PRESENT = 4
INFO_BOOT_HINT = 8
INFO_CDROM = 16

# Error codes returned in r3 (all negative, so MOL guests that test "!= 0" still work).
E_INVAL = -1      # bad channel, unknown CNTRL command, bad ring geometry, ring busy
E_NOUNIT = -2     # no such unit
E_RANGE = -3      # the sectors lie (partly) past the end of the disk
E_FAULT = -4      # a guest buffer or the ring lies (partly) outside RAM
E_LENGTH = -5     # byte count not a multiple of 512, or larger than RAM ("negative")
E_ROFS = -6       # write to a read-only disk (-ro, -cd)
E_IO = -7         # the host's read or write failed
E_RING = -8       # bad ring descriptor or runaway ring: the engine stops
E_STOPPED = -9    # (no longer returned: KICK answers 0 as in MOL; kept for the name table)

ERROR_NAMES = {E_INVAL: "EINVAL", E_NOUNIT: "ENOUNIT", E_RANGE: "ERANGE", E_FAULT: "EFAULT",
               E_LENGTH: "ELENGTH", E_ROFS: "EROFS", E_IO: "EIO", E_RING: "ERING",
               E_STOPPED: "ESTOPPED"}

DESC_SIZE = 16           # a ring descriptor: flags, then two words (what they mean depends on them)
MAX_RING_EL = 65536      # descriptors in a ring
OP_NONE = 0              # no request since CNTRL start: data entries are counted, no I/O (MOL)
OP_DUMMY = 3             # a control request: its data entries are consumed without I/O
OPS = (OP_NONE, REQ_READ, REQ_WRITE, OP_DUMMY)    # what the ring's data entries belong to
