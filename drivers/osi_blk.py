"""osi_blk: MOL's asynchronous block device ("ablk", OSI selectors 79-85).

The guest finds its disks with DISK_INFO, moves sectors with SYNC_READ/SYNC_WRITE,
or queues requests on a ring of 16-byte descriptors in its own RAM (RING_SETUP,
CNTRL start, KICK, IRQ_ACK) exactly as MOL's guest drivers do. molpy has no
interrupts and no I/O thread: KICK runs every queued descriptor before it returns
and IRQ_ACK then reports the completed count.

Data goes straight between the block backend and a memoryview of guest RAM. The
guest is untrusted: every unit, sector, length, address and ring index is checked,
and a bad request gets a negative error code in r3 (the codes are below and in
docs/osi-abi.md); the host never raises for guest input.
"""

from __future__ import annotations

import json
import logging
import struct
from dataclasses import dataclass
from typing import Any

from .device import Device, StateMismatch

log = logging.getLogger("molpy.osi_blk")

SECTOR = 512

OSI_ABLK_RING_SETUP = 79
OSI_ABLK_CNTRL = 80
OSI_ABLK_DISK_INFO = 81
OSI_ABLK_KICK = 82
OSI_ABLK_IRQ_ACK = 83
OSI_ABLK_SYNC_READ = 84
OSI_ABLK_SYNC_WRITE = 85

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
E_STOPPED = -9    # KICK while the engine is not started

ERROR_NAMES = {E_INVAL: "EINVAL", E_NOUNIT: "ENOUNIT", E_RANGE: "ERANGE", E_FAULT: "EFAULT",
               E_LENGTH: "ELENGTH", E_ROFS: "EROFS", E_IO: "EIO", E_RING: "ERING",
               E_STOPPED: "ESTOPPED"}

DESC_SIZE = 16
MAX_RING_EL = 65536      # descriptors in a ring
MAX_SG_BATCH = 32        # scatter-gather entries executed as one batch (MOL's MAX_IOVEC)

OP_NONE = 0              # no request header seen since CNTRL start
OP_DUMMY = 3             # a control request: its data entries are consumed without I/O

STATE_MAGIC = b"MPBK"
STATE_VERSION = 1
_HEAD = struct.Struct(">4sHI")
_DESC = struct.Struct(">IIII")
_TWO = struct.Struct(">II")
_ONE = struct.Struct(">I")


@dataclass
class Unit:
    """One disk as the guest sees it."""

    spec: Any
    backend: Any
    flags: int
    events: int = 0
    dirty: bool = False            # written since the last load_state/reset (cow reset)

    @property
    def readonly(self) -> bool:
        return bool(self.flags & INFO_READ_ONLY)

    @property
    def cow(self) -> bool:
        return bool(getattr(self.spec, "cow", False))


@dataclass
class RingState:
    """The engine's registers; the descriptors themselves live in guest RAM."""

    base: int = 0
    n_el: int = 0                  # 0: no ring set up
    running: bool = False
    head: int = 0                  # slot of the last descriptor taken (MOL's req_head)
    completed: int = 0             # descriptors completed since CNTRL start (IRQ_ACK r4)
    irq: bool = False              # the (virtual) interrupt line
    event: bool = False
    cur_unit: int = -1             # the request the next data entries belong to
    cur_op: int = OP_NONE
    cur_pos: int = 0               # byte offset on the disk of the next data entry
    last_error: int = 0

    def as_dict(self) -> dict:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, d: dict) -> "RingState":
        state = cls()
        for key in state.__dict__:
            if key in d:
                setattr(state, key, type(getattr(state, key))(d[key]))
        return state


def unit_flags(spec: Any, backend: Any) -> int:
    """DISK_INFO flags for a blkdev spec (MOL's add_drive)."""
    flags = INFO_MEDIA_PRESENT
    if backend.readonly or getattr(spec, "readonly", False) or getattr(spec, "cd", False):
        flags |= INFO_READ_ONLY
    if getattr(spec, "cd", False):
        flags |= INFO_CDROM | INFO_REMOVABLE
    if getattr(spec, "removable", False):      # -removable, -drvdisk
        flags |= INFO_REMOVABLE
    if getattr(spec, "boot", False):
        flags |= INFO_BOOT_HINT
    return flags


class OsiBlk(Device):
    """The ablk channel 0 and its units, in blkdev order.

    Session state (``save_state``), version 1, big-endian::

        "MPBK" | u16 version | u32 n | n bytes of UTF-8 JSON | overlay blobs

    JSON: ``{"ring": RingState fields, "disks": [marker, ...]}`` with one marker per
    unit: ``unit, path, size, inode, mtime_ns`` (the disk's identity; for ``-cow`` the
    base disk's), ``cow``, ``readonly``, ``digest`` (SHA-256 of the disk's contents
    at save time, checked by ``session verify --deep``) and ``overlay`` (byte length of the unit's
    exported cow overlay, or null when the overlay held no data). The overlay blobs
    follow the JSON in unit order.
    """

    kind = "ABLK"

    def __init__(self, machine, units: list[Unit], io_errors: tuple[type[BaseException], ...] = (OSError,)) -> None:
        self.machine = machine
        self.units = units
        self.ring = RingState()
        self._io_errors = io_errors
        self._loaded_ring = RingState()
        self._loaded_overlays: dict[int, bytes] = {}
        self._warned: set[str] = set()

    # -- wiring --

    def attach(self, machine) -> None:
        osi = machine.osi
        osi.register(OSI_ABLK_RING_SETUP, self.ring_setup, 3, "osi_blk")
        osi.register(OSI_ABLK_CNTRL, self.cntrl, 3, "osi_blk")
        osi.register(OSI_ABLK_DISK_INFO, self.disk_info, 2, "osi_blk")
        osi.register(OSI_ABLK_KICK, self.kick, 1, "osi_blk")
        osi.register(OSI_ABLK_IRQ_ACK, self.irq_ack, 1, "osi_blk")
        osi.register(OSI_ABLK_SYNC_READ, self.sync_read, 5, "osi_blk")
        osi.register(OSI_ABLK_SYNC_WRITE, self.sync_write, 5, "osi_blk")

    def _warn_once(self, key: str, msg: str, *args) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning(msg, *args)

    # -- disk info and synchronous I/O --

    def disk_info(self, channel: int, unit: int) -> int | tuple[int, ...]:
        """r3 = 0, r4 = size in 512-byte sectors, r5 = flags, r6 = r7 = 0."""
        if channel:
            return E_INVAL
        if unit >= len(self.units):
            return E_NOUNIT
        u = self.units[unit]
        return (0, min(u.backend.size // SECTOR, 0xFFFFFFFF), u.flags, 0, 0)

    def sync_read(self, channel: int, unit: int, blk: int, addr: int, size: int) -> int:
        return self._sync(False, channel, unit, blk, addr, size)

    def sync_write(self, channel: int, unit: int, blk: int, addr: int, size: int) -> int:
        return self._sync(True, channel, unit, blk, addr, size)

    def _sync(self, write: bool, channel: int, unit: int, blk: int, addr: int, size: int) -> int:
        if channel:
            return E_INVAL
        if unit >= len(self.units):
            return E_NOUNIT
        u = self.units[unit]
        if write and u.readonly:
            return E_ROFS
        mem = self.machine.memory
        if size % SECTOR or size > mem.size:
            return E_LENGTH
        if addr + size > mem.size:
            return E_FAULT
        offset = blk * SECTOR
        if offset + size > u.backend.size:
            return E_RANGE
        if not size:
            return 0
        return self._transfer(u, write, offset, addr, size)

    def _transfer(self, u: Unit, write: bool, offset: int, addr: int, size: int) -> int:
        """One checked transfer between the disk and guest RAM, without copies."""
        buf = self.machine.memory.view[addr:addr + size]
        try:
            if write:
                u.dirty = True
                u.backend.write(offset, buf)
            else:
                u.backend.readinto(offset, buf)
                self.machine.cpu.code_changed(addr, addr + size)
        except self._io_errors as e:
            self._warn_once(f"io:{u.backend.path}", "osi_blk: %s error on %s at byte %d: %s",
                            "write" if write else "read", u.backend.path, offset, e)
            return E_IO
        finally:
            buf.release()
        return 0

    # -- the ring --

    def ring_setup(self, channel: int, addr: int, n_el: int) -> int:
        """Place a ring of ``n_el`` descriptors (a power of two) at guest-physical ``addr``."""
        r = self.ring
        if channel or r.running:
            return E_INVAL
        if not 0 < n_el <= MAX_RING_EL or n_el & (n_el - 1):
            return E_INVAL
        if addr + n_el * DESC_SIZE > self.machine.memory.size:
            return E_FAULT
        r.base, r.n_el, r.head = addr, n_el, 0
        return 0

    def cntrl(self, channel: int, cmd: int, param: int) -> int:
        r = self.ring
        if channel:
            return E_INVAL
        ret = 0
        if cmd == CNTRL_START:
            if not r.running:
                if not r.n_el:
                    return E_INVAL
                # slot 0 counts as already taken; the guest's first request goes in slot 1
                r.head, r.completed, r.running = 0, 0, True
                r.cur_unit, r.cur_op, r.cur_pos, r.last_error = -1, OP_NONE, 0, 0
                self.machine.memory.write_u32(r.base, REQ_NOP)
        elif cmd == CNTRL_RESET:
            r.completed = 0
            r.running = False
        elif cmd == CNTRL_STOP:
            r.running = False
        elif cmd == CNTRL_ROUTE_IRQ:
            pass                       # no interrupts in molpy: guests poll IRQ_ACK
        elif cmd == CNTRL_GET_EVENTS:
            if param >= len(self.units):
                return E_NOUNIT
            ret, self.units[param].events = self.units[param].events, 0
        else:
            return E_INVAL
        if not r.running:
            r.irq = False
        return ret

    def kick(self, channel: int) -> int:
        """Run the queued descriptors; 0, or the error that stopped the engine."""
        if channel:
            return E_INVAL
        if not self.ring.running:
            return E_STOPPED
        return self._process()

    def irq_ack(self, channel: int) -> int | tuple[int, ...]:
        """r3 = 1 if the line was raised since the last ack, r4 = completed, r5 = active, r6 = event."""
        if channel:
            return E_INVAL
        r = self.ring
        raised = r.irq
        r.irq = False
        event = int(r.event)
        if raised:
            r.event = False
            # as MOL: restart the engine when the guest queued more work without a kick
            if r.running and self._slot(r.head)[1]:
                self._process()
                r.irq = False
        return (1 if raised else 0, r.completed & 0xFFFFFFFF, 0, event)

    def _slot(self, index: int) -> tuple[int, int]:
        return _TWO.unpack_from(self.machine.memory.view, self.ring.base + index * DESC_SIZE)

    def _process(self) -> int:
        """MOL's engine loop, run to the end: every descriptor the guest has armed."""
        r = self.ring
        view = self.machine.memory.view
        base, mask = r.base, r.n_el - 1
        budget = r.n_el                # one lap: more means the ring re-arms itself
        batch: list[tuple[int, int]] = []
        while True:
            cur = r.head
            slot = base + cur * DESC_SIZE
            proceed = _ONE.unpack_from(view, slot + 4)[0]
            nxt = (cur + 1) & mask
            if batch and (not proceed or len(batch) >= MAX_SG_BATCH
                          or not _ONE.unpack_from(view, base + nxt * DESC_SIZE)[0] & REQ_SG_BUF):
                err = self._run_batch(batch)
                if err:
                    return self._fail(err)
                r.completed += len(batch)
                batch = []
            if not proceed:
                break
            if budget <= 0:
                return self._fail(E_RING, "the ring re-armed itself (more than one lap in one kick)")
            budget -= 1
            _TWO.pack_into(view, slot, 0, 0)     # hand the old head slot back to the guest
            r.head = nxt
            flags, _, a, b = _DESC.unpack_from(view, base + nxt * DESC_SIZE)
            if flags & REQ_SG_BUF:
                if r.cur_op == OP_NONE:
                    return self._fail(E_RING, "a data entry without a request")
                batch.append((a, b))           # buf, count
                continue
            if a >= len(self.units):
                return self._fail(E_NOUNIT)
            if flags & (REQ_READ | REQ_WRITE):
                op = REQ_WRITE if flags & REQ_WRITE else REQ_READ
                u = self.units[a]
                if op == REQ_WRITE and u.readonly:
                    return self._fail(E_ROFS)
                if b * SECTOR > u.backend.size:
                    return self._fail(E_RANGE)
                r.cur_unit, r.cur_op, r.cur_pos = a, op, b * SECTOR
            elif flags & REQ_CNTRL_MASK:
                # NOP, EJECT, LOCKDOOR: nothing to do for fixed disks
                r.cur_unit, r.cur_op, r.cur_pos = a, OP_DUMMY, 0
                if flags & REQ_RAISE_IRQ:
                    r.irq = True
            else:
                return self._fail(E_RING, f"descriptor {nxt} has no request flags (0x{flags:x})")
            r.completed += 1
        r.irq = True
        return 0

    def _run_batch(self, batch: list[tuple[int, int]]) -> int:
        """Execute the data entries of the current request; contiguous guest buffers are merged."""
        r = self.ring
        mem_size = self.machine.memory.size
        total = 0
        for addr, count in batch:
            if count > mem_size or addr + count > mem_size:
                return E_FAULT
            total += count
        if r.cur_op == OP_DUMMY:
            return 0
        u = self.units[r.cur_unit]
        pos = r.cur_pos
        if pos + total > u.backend.size:
            return E_RANGE
        write = r.cur_op == REQ_WRITE
        run_addr, run_len = batch[0]
        for addr, count in batch[1:]:
            if addr == run_addr + run_len:
                run_len += count
                continue
            if run_len:
                err = self._transfer(u, write, pos, run_addr, run_len)
                if err:
                    return err
                pos += run_len
            run_addr, run_len = addr, count
        if run_len:
            err = self._transfer(u, write, pos, run_addr, run_len)
            if err:
                return err
            pos += run_len
        r.cur_pos = pos
        return 0

    def _fail(self, err: int, why: str = "") -> int:
        """MOL's engine error: the engine stops and the line goes up; the guest must restart it."""
        r = self.ring
        r.running = False
        r.irq = True
        r.last_error = err
        self._warn_once(f"ring:{err}", "osi_blk: ring stopped: %s%s", ERROR_NAMES.get(err, err),
                        f" ({why})" if why else "")
        return err

    # -- sessions --

    def marker(self, u: Unit, index: int, digest: bool = False) -> dict:
        """The disk-sync marker of one unit (see the class docstring)."""
        ident = _identity(u)
        m = {"unit": index, "path": ident["path"], "size": ident["size"], "inode": ident["inode"],
             "mtime_ns": ident["mtime_ns"], "cow": u.cow, "readonly": u.readonly, "digest": None,
             "overlay": None}
        if digest:
            m["digest"] = _digest(u.spec.path)
        return m

    def save_state(self) -> bytes:
        disks, blobs = [], []
        for i, u in enumerate(self.units):
            u.backend.flush()
            m = self.marker(u, i, digest=True)
            if u.cow and u.backend.has_data():
                blob = u.backend.export_overlay()
                m["overlay"] = len(blob)
                blobs.append(blob)
            disks.append(m)
        doc = json.dumps({"ring": self.ring.as_dict(), "disks": disks}, separators=(",", ":")).encode()
        return b"".join([_HEAD.pack(STATE_MAGIC, STATE_VERSION, len(doc)), doc, *blobs])

    def verify_state(self, data: bytes, deep: bool = False) -> list[str]:
        try:
            ring, disks, blobs = _parse_state(data)
        except ValueError as e:
            return [str(e)]
        problems = self._disk_problems(disks)
        if not problems and ring.n_el and ring.base + ring.n_el * DESC_SIZE > self.machine.memory.size:
            problems.append("osi_blk: the saved ring lies outside this machine's RAM")
        if deep and not problems:
            for m, u in zip(disks, self.units):
                if m["digest"] and _digest(u.spec.path) != m["digest"]:
                    problems.append(f"disk {m['path']}: its contents changed since the session was saved "
                                    f"(same size and date, different data); put the disk back as it "
                                    f"was, or start with --fresh")
        return problems

    def load_state(self, data: bytes) -> None:
        ring, disks, blobs = _parse_state(data)
        problems = self._disk_problems(disks)
        if problems:
            raise StateMismatch(problems[0])
        if ring.n_el and ring.base + ring.n_el * DESC_SIZE > self.machine.memory.size:
            raise ValueError("osi_blk: the saved ring lies outside this machine's RAM")
        self._loaded_ring = RingState.from_dict(ring.as_dict())
        self._loaded_overlays = {m["unit"]: blob for m, blob in zip(disks, blobs) if blob is not None}
        for u in self.units:
            u.dirty = True
        self.reset()

    def _disk_problems(self, disks: list[dict]) -> list[str]:
        """What keeps the saved disks from matching the ones attached now."""
        if len(disks) != len(self.units):
            saved = ", ".join(m["path"] for m in disks) or "none"
            now = ", ".join(_identity(u)["path"] for u in self.units) or "none"
            return [f"the session was saved with disks [{saved}] but this config attaches [{now}]; "
                    f"attach the same blkdevs, or start with --fresh"]
        problems = []
        for m, u in zip(disks, self.units):
            now = _identity(u)
            path = m["path"]
            if now["path"] != path:
                problems.append(f"unit {m['unit']}: the session was saved with disk {path} but this config "
                                f"attaches {now['path']} there; attach the same blkdevs, or start with --fresh")
                continue
            if m["overlay"] is not None and not u.cow:
                problems.append(f"disk {path}: the session holds the guest's changes to it in a cow "
                                f"overlay; attach it with -cow to resume, or start with --fresh")
                continue
            changes = []
            if now["size"] != m["size"]:
                changes.append(f"size {m['size']} -> {now['size']} bytes")
            if now["inode"] != m["inode"]:
                changes.append("it is a different file (inode changed)")
            if now["mtime_ns"] != m["mtime_ns"]:
                changes.append("it was modified since the session was saved")
            if changes:
                problems.append(f"disk {path} changed: {'; '.join(changes)}. The saved session no longer "
                                f"matches it: put the disk back as it was, or start with --fresh")
        return problems

    def reset(self) -> None:
        """Back to the state last loaded: the ring registers and every cow overlay."""
        self.ring = RingState.from_dict(self._loaded_ring.as_dict())
        for i, u in enumerate(self.units):
            if not u.dirty:
                continue
            if u.cow:
                blob = self._loaded_overlays.get(i)
                if blob is not None:
                    u.backend.import_overlay(blob)
                elif u.backend.has_data():
                    u.backend.clear()
            u.dirty = False
            u.events = 0

    def close(self) -> None:
        units, self.units = self.units, []
        for u in units:
            try:
                u.backend.close()
            except OSError as e:   # closing must not lose the others
                log.warning("osi_blk: closing %s: %s", u.backend.path, e)


# -- helpers --

def _identity(u: Unit) -> dict:
    """path, size, inode, mtime_ns of the unit's disk (for -cow: the base disk)."""
    ident = u.backend.identity()
    if hasattr(ident, "_asdict"):
        d = ident._asdict()
    elif hasattr(ident, "__dataclass_fields__"):
        d = {k: getattr(ident, k) for k in ident.__dataclass_fields__}
    else:
        d = dict(ident)
    mtime = d.get("mtime_ns", d.get("mtime"))
    return {"path": str(d.get("path", u.backend.path)), "size": int(d.get("size", u.backend.size)),
            "inode": int(d.get("inode", d.get("ino", 0)) or 0), "mtime_ns": int(mtime or 0)}


def _digest(path: str) -> str:
    from .block import content_digest
    return content_digest(path)


def _parse_state(data: bytes) -> tuple[RingState, list[dict], list[bytes | None]]:
    """Split ``save_state`` bytes; ValueError when they are damaged."""
    if len(data) < _HEAD.size:
        raise ValueError("osi_blk state is truncated")
    magic, version, n = _HEAD.unpack_from(data)
    if magic != STATE_MAGIC or version != STATE_VERSION:
        raise ValueError(f"osi_blk state has an unknown format ({magic!r} version {version})")
    try:
        doc = json.loads(bytes(data[_HEAD.size:_HEAD.size + n]))
        ring = RingState.from_dict(doc["ring"])
        disks = list(doc["disks"])
        for m in disks:
            for key in ("unit", "path", "size", "inode", "mtime_ns", "cow", "overlay"):
                m[key]
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"osi_blk state is damaged ({e})") from None
    pos = _HEAD.size + n
    blobs: list[bytes | None] = []
    for m in disks:
        size = m["overlay"]
        if size is None:
            blobs.append(None)
            continue
        if pos + size > len(data):
            raise ValueError("osi_blk state is truncated (overlay data missing)")
        blobs.append(bytes(data[pos:pos + size]))
        pos += size
    return ring, disks, blobs


def open_units(specs: list, cow_dir: str | None, inspect_only: bool = False) -> list[Unit]:
    """Open every blkdev in order; on a failure close the ones already open and re-raise.

    ``inspect_only`` (session verify) opens every disk read-only and makes no overlay."""
    from .block import RawBackend, open_blkdev
    from .demo_disk import ensure_demo_disk

    units: list[Unit] = []
    try:
        for spec in specs:
            ensure_demo_disk(spec.path)
            backend = RawBackend(spec.path, readonly=True) if inspect_only else open_blkdev(spec, cow_dir)
            units.append(Unit(spec=spec, backend=backend, flags=unit_flags(spec, backend)))
    except BaseException:
        for u in units:
            try:
                u.backend.close()
            except OSError:
                pass
        raise
    return units


def create(machine) -> OsiBlk:
    """The ablk device with the machine's blkdevs. BlockError (a disk that cannot be
    opened, a lock held by another molpy ...) propagates: the CLI prints it as one line."""
    specs = list(machine.config.blkdevs)
    if not specs:                      # still served: the guest learns there are no disks
        return OsiBlk(machine, [])
    from .block import BlockError

    units = open_units(specs, machine.config.cow_dir, machine.config.inspect_only)
    return OsiBlk(machine, units, io_errors=(OSError, BlockError))

