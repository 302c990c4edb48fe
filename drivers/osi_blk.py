"""osi_blk: MOL's asynchronous block device ("ablk", OSI selectors 79-85).

The guest finds its disks with DISK_INFO, moves sectors with SYNC_READ/SYNC_WRITE,
or queues requests on a ring of 16-byte descriptors in its own RAM (RING_SETUP,
CNTRL start, KICK, IRQ_ACK) exactly as MOL's guest drivers do. molpy has no
interrupts and no I/O thread: KICK runs every queued descriptor before it returns
and IRQ_ACK then reports the completed count. What a MOL guest can see follows
MOL's ablk.c (KICK answers 0, an engine error shows as a stopped engine; IRQ_ACK
answers a bare 0 when the line is low; byte counts need not be whole sectors);
docs/osi-abi.md lists where molpy checks more than MOL did.

Data goes straight between the block backend and a memoryview of guest RAM. The
guest is untrusted: every unit, sector, length, address and ring index is checked,
and a bad request gets a negative error code in r3 (the codes are below and in
docs/osi-abi.md); the host never raises for guest input.
"""

from __future__ import annotations

import logging
import os
import struct
import threading
from dataclasses import dataclass, field
from typing import Any

from molpy.emulation.session import Bulk, BulkRef, Later, SessionError
from molpy.emulation.state import StateError

from .blk_state import (DESC_SIZE, MAX_RING_EL, OP_DUMMY, OP_NONE, OPS, REQ_READ, REQ_WRITE, BlkState,
                        DiskMarker, RingState, parse_state)
from .block import SECTOR, BlockBackend, BlockError, Identity
from .device import Device, DeviceContext, StateMismatch
from .digests import DiskDigests
from .disks import DiskSpec, open_blkdev, readonly_without_cow

log = logging.getLogger("molpy.osi_blk")

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

MAX_SG_BATCH = 32        # scatter-gather entries executed as one batch (MOL's MAX_IOVEC)
TRANSFER_STEP = 16 << 20  # long transfers go in steps; a stop request is seen between them


BULK_KIND = "COWD"       # a layered unit's changes (a -cow overlay's); instance = unit number
_DESC = struct.Struct(">IIII")
_TWO = struct.Struct(">II")
_ONE = struct.Struct(">I")


@dataclass
class Unit:
    """One disk as the guest sees it."""

    spec: DiskSpec
    backend: BlockBackend
    flags: int
    dirty: bool = False            # written since the last load_state/reset (cow reset)
    boot_flags: int = 0            # the flags as configured (BLESS_DISK moves the boot hint)
    digests: DiskDigests | None = None   # of the disk under every layer, made on first use
    watch: DiskDigests | None = None     # the same, when this unit's writes reach that disk
    unflushed: bool = True         # written since molpy last flushed it (unknown at first)
    flushing: threading.Lock = field(default_factory=threading.Lock)

    def flush(self) -> None:
        """Flush the backend when molpy wrote since the last flush. The flag is cleared
        first: a write that lands meanwhile sets it again. (The digest thread flushes too,
        as write-behind: the lock makes a save wait for a flush under way.)"""
        with self.flushing:
            if self.unflushed:
                self.unflushed = False
                self.backend.flush()

    @property
    def readonly(self) -> bool:
        return bool(self.flags & INFO_READ_ONLY)


def unit_flags(spec: DiskSpec, backend: BlockBackend) -> int:
    """DISK_INFO flags for a blkdev spec (MOL's add_drive)."""
    flags = INFO_MEDIA_PRESENT
    if backend.readonly or spec.readonly or spec.cd:
        flags |= INFO_READ_ONLY
    if spec.cd:
        flags |= INFO_CDROM | INFO_REMOVABLE
    if spec.removable:      # -removable, -drvdisk
        flags |= INFO_REMOVABLE
    if spec.boot:
        flags |= INFO_BOOT_HINT
    return flags


class OsiBlk(Device):
    """The ablk channel 0 and its units, in blkdev order. Its session state (the ring
    registers and a disk-sync marker per unit, version 3) is described in drivers/blk_state.py."""

    kind = "ABLK"
    version = 3
    min_version = 1

    def __init__(self, ctx: DeviceContext, units: list[Unit], io_errors: tuple[type[BaseException], ...] = (OSError,)) -> None:
        self.ctx = ctx
        self.units = units
        self.ring = RingState()
        self._io_errors = io_errors
        self._loaded_ring = RingState()
        self._loaded_overlays: dict[int, tuple[Any, int, int | None]] = {}   # unit -> (read, length, crc)
        self._bulk: dict[tuple[str, int], BulkRef] = {}
        self._warned: set[str] = set()
        self._checked: set[int] = set()    # units whose contents the last check read
        self.notes: list[str] = []         # disks accepted by a content check (one line each)
        self.keep_digests = True           # False while a check of saved state has not passed
        self._computed: list[DiskDigests] = []   # digests of another region size, read by a check
        for u in units:
            u.boot_flags = u.flags & INFO_BOOT_HINT

    # -- wiring --

    def attach(self, ctx: DeviceContext) -> None:
        osi = ctx.osi
        osi.register(OSI_ABLK_RING_SETUP, self.ring_setup, 3, "osi_blk")
        osi.register(OSI_ABLK_CNTRL, self.cntrl, 3, "osi_blk")
        osi.register(OSI_ABLK_DISK_INFO, self.disk_info, 2, "osi_blk")
        osi.register(OSI_ABLK_KICK, self.kick, 1, "osi_blk")
        osi.register(OSI_ABLK_IRQ_ACK, self.irq_ack, 1, "osi_blk")
        osi.register(OSI_ABLK_SYNC_READ, self.sync_read, 5, "osi_blk")
        osi.register(OSI_ABLK_SYNC_WRITE, self.sync_write, 5, "osi_blk")
        osi.register(OSI_ABLK_BLESS_DISK, self.bless_disk, 2, "osi_blk")

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

    def bless_disk(self, channel: int, unit: int) -> int:
        """MOL's BLESS_DISK: this unit becomes the one boot hint (the firmware booted it)."""
        if channel or unit >= len(self.units):
            return E_INVAL
        for u in self.units:
            u.flags &= ~INFO_BOOT_HINT
        self.units[unit].flags |= INFO_BOOT_HINT
        return 0

    def sync_read(self, channel: int, unit: int, blk: int, addr: int, size: int) -> int:
        return self._sync(False, channel, unit, blk, addr, size)

    def sync_write(self, channel: int, unit: int, blk: int, addr: int, size: int) -> int:
        return self._sync(True, channel, unit, blk, addr, size)

    def _sync(self, write: bool, channel: int, unit: int, blk: int, addr: int, size: int) -> int:
        """MOL's sync_io: ``blk`` is a signed sector number, ``size`` any byte count."""
        if channel:
            return E_INVAL
        if unit >= len(self.units):
            return E_NOUNIT
        u = self.units[unit]
        if write and u.readonly:
            return E_ROFS
        mem = self.ctx.memory
        if size > mem.size:
            return E_LENGTH
        if addr + size > mem.size:
            return E_FAULT
        if blk & 0x80000000:
            return E_RANGE
        offset = blk * SECTOR
        if offset + size > u.backend.size:
            return E_RANGE
        if not size:
            return 0
        return self._transfer(u, write, offset, addr, size)

    def _transfer(self, u: Unit, write: bool, offset: int, addr: int, size: int) -> int:
        """One checked transfer between the disk and guest RAM, without copies; a long one
        goes in steps so that Ctrl-C or SIGTERM is seen within one step."""
        view = self.ctx.memory.view
        if not write and size <= TRANSFER_STEP:          # the common case, kept short
            buf = view[addr:addr + size]
            try:
                u.backend.readinto(offset, buf)
            except self._io_errors as e:
                self._warn_once(f"io:{u.backend.path}", "osi_blk: read error on %s at byte %d: %s",
                                u.backend.path, offset, e)
                return E_IO
            finally:
                buf.release()
            self.ctx.code_changed(addr, addr + size)
            return 0
        done = 0
        try:
            while done < size:
                n = min(size - done, TRANSFER_STEP)
                if done and self.ctx.stop_requested():
                    return E_IO
                buf = view[addr + done:addr + done + n]
                try:
                    if write:
                        u.dirty = True
                        if u.watch is not None:
                            u.watch.before_write()
                        try:
                            u.backend.write(offset + done, buf)
                        finally:                 # after the data: its regions are stale
                            u.unflushed = True
                            if u.watch is not None:
                                u.watch.mark(offset + done, n)
                    else:
                        u.backend.readinto(offset + done, buf)
                finally:
                    buf.release()
                done += n
        except self._io_errors as e:
            self._warn_once(f"io:{u.backend.path}", "osi_blk: %s error on %s at byte %d: %s",
                            "write" if write else "read", u.backend.path, offset + done, e)
            return E_IO
        finally:
            if not write and done:
                self.ctx.code_changed(addr, addr + done)
        return 0

    # -- the ring --

    def ring_setup(self, channel: int, addr: int, n_el: int) -> int:
        """Place a ring of ``n_el`` descriptors (a power of two) at guest-physical ``addr``.

        ``n_el`` 0 is accepted as MOL accepts it, as "no usable ring" (START then fails);
        MOL took it as a ring without end, which reads and writes past any buffer.
        """
        r = self.ring
        if channel or r.running:
            return E_INVAL
        if n_el > MAX_RING_EL or n_el & (n_el - 1):
            return E_INVAL
        if addr + n_el * DESC_SIZE > self.ctx.memory.size or addr >= self.ctx.memory.size:
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
                r.cur_unit, r.cur_op, r.cur_pos = -1, OP_NONE, 0
                self.ctx.memory.write_u32(r.base, REQ_NOP)
                self.ctx.code_changed(r.base, r.base + 4)
        elif cmd in (CNTRL_RESET, CNTRL_STOP):
            if cmd == CNTRL_RESET:
                r.completed = 0
            r.running = False
        elif cmd == CNTRL_ROUTE_IRQ:
            pass                       # no interrupts in molpy: guests poll IRQ_ACK
        elif cmd == CNTRL_GET_EVENTS:
            if param >= len(self.units):
                return E_NOUNIT
            ret = 0                    # molpy's disks never change media: no events (documented)
        else:
            # MOL: an unknown command is refused and also resets the engine
            r.completed = 0
            r.running = False
            ret = E_INVAL
        if not r.running:
            r.irq = False
        return ret

    def kick(self, channel: int) -> int:
        """Run the queued descriptors. Always 0 for channel 0 (as MOL): an engine error stops
        the engine and raises the line; the guest sees it at IRQ_ACK."""
        if channel:
            return E_INVAL
        if self.ring.running:
            self._process()
        return 0

    def irq_ack(self, channel: int) -> int | tuple[int, ...]:
        """0 when the line was low (r4.. untouched, as MOL); else r3 = 1, r4 = completed,
        r5 = active (always 0: requests finish inside KICK), r6 = event (always 0: no media changes)."""
        if channel:
            return E_INVAL
        r = self.ring
        if not r.irq:
            return 0
        r.irq = False
        # as MOL: restart the engine when the guest queued more work without a kick
        if r.running and self._slot(r.head)[1]:
            self._process()
            r.irq = False
        return (1, r.completed & 0xFFFFFFFF, 0, 0)

    def _slot(self, index: int) -> tuple[int, int]:
        return _TWO.unpack_from(self.ctx.memory.view, self.ring.base + index * DESC_SIZE)

    def _process(self) -> int:
        """MOL's engine loop, run to the end: every descriptor the guest has armed.

        The engine writes guest RAM itself (it hands slots back by clearing them): the
        translations of the ring are dropped afterwards, as for any host write to RAM.
        """
        try:
            return self._run_ring()
        finally:
            r = self.ring
            self.ctx.code_changed(r.base, r.base + r.n_el * DESC_SIZE)

    def _run_ring(self) -> int:
        r = self.ring
        view = self.ctx.memory.view
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
            if self.ctx.stop_requested():
                return 0               # molpy is stopping: the rest stays queued
            if budget <= 0:
                return self._fail(E_RING, "the ring re-armed itself (more than one lap in one kick)")
            budget -= 1
            _TWO.pack_into(view, slot, 0, 0)     # hand the old head slot back to the guest
            r.head = nxt
            flags, _, a, b = _DESC.unpack_from(view, base + nxt * DESC_SIZE)
            if flags & REQ_SG_BUF:
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
        """Execute the data entries of the current request; contiguous guest buffers are merged.

        Entries need not be whole sectors: each continues at the byte where the last ended.
        Data entries with no request before them (right after START) are counted without
        I/O, as in MOL; their buffers are still checked.
        """
        r = self.ring
        mem_size = self.ctx.memory.size
        total = 0
        for addr, count in batch:
            if count > mem_size or addr + count > mem_size:
                return E_FAULT
            total += count
        if r.cur_op in (OP_NONE, OP_DUMMY):
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
        self._warn_once(f"ring:{err}", "osi_blk: ring stopped: %s%s", ERROR_NAMES.get(err, err),
                        f" ({why})" if why else "")
        return err

    # -- sessions --

    def marker(self, u: Unit, index: int) -> DiskMarker:
        """The disk-sync marker of one unit, its digest still to come (drivers/blk_state.py)."""
        ident = u.backend.identity()
        return DiskMarker(unit=index, path=ident.path, size=ident.size, inode=ident.inode,
                          mtime_ns=ident.mtime_ns, dev=ident.dev, cow=u.backend.layered, readonly=u.readonly,
                          digest=None, region=None, overlay=u.backend.changes_length() > 0,
                          boot=bool(u.flags & INFO_BOOT_HINT))

    def save_state(self) -> bytes:
        return self.save_later().finish()

    def save_later(self) -> Later:
        """The markers now; their digests are finished on every core while the session
        layer writes RAM (only the regions written since they were last known are read)."""
        disks, jobs = [], []
        try:
            for i, u in enumerate(self.units):
                try:
                    u.flush()
                except OSError as e:
                    raise SessionError(f"disk {u.backend.path}: cannot flush it: {e.strerror}") from None
                m = self.marker(u, i)
                d = self._digests(u)
                m.region = d.region
                m.digest = "0" * 64                   # (the digest's width, for the bound)
                jobs.append(d.finish_later())
                disks.append(m)
        except BaseException as e:
            for job in jobs:                             # the disks started are not left paused
                try:
                    job()
                except OSError:
                    pass
            if isinstance(e, OSError):
                raise SessionError(str(e)) from None
            raise
        ring = self.ring.as_dict()

        def encode() -> bytes:
            return BlkState(ring, disks).encode()

        def finish() -> bytes:
            try:
                for m, job in zip(disks, jobs):
                    m.digest = job()
            except OSError as e:
                raise SessionError(str(e)) from None
            for m, u in zip(disks, self.units):      # the marker names what was verified
                if self.marker(u, m.unit).mtime_ns != m.mtime_ns or \
                        u.backend.identity().inode != m.inode:
                    raise SessionError(f"disk {m.path}: it changed while the session was saved "
                                       f"(another program writes it); save again when nothing else does")
            return encode()
        return Later(len(encode()), finish)

    def save_bulk(self) -> list[Bulk]:
        """The changes each layered unit holds (a -cow overlay's), streamed as chunks of their own."""
        return [Bulk(BULK_KIND, i, u.backend.changes_length(), u.backend.save_changes)
                for i, u in enumerate(self.units) if u.backend.changes_length()]

    def restore_bulk(self, refs: dict[tuple[str, int], BulkRef]) -> None:
        self._bulk = {k: v for k, v in refs.items() if k[0] == BULK_KIND}

    @classmethod
    def describe(cls, data: bytes, version: int) -> str:
        try:
            state = parse_state(data, version)
        except StateError as e:
            return f"(damaged: {e})"
        parts = [f"{m.path}{' (holds changes)' if m.overlay else ''}" for m in state.disks]
        return "disks: " + (", ".join(parts) or "none") + ("; ring running" if state.ring.get("running") is True else "")

    def verify_state(self, data: bytes, version: int, deep: bool = False) -> list[str]:
        self.notes = []
        try:
            state = parse_state(data, version)
            disks = state.disks
            RingState.from_dict(state.ring, self.ctx.memory.size, [u.backend.size for u in self.units]
                                if len(disks) == len(self.units) else [m.size for m in disks])
        except (ValueError, StateError) as e:
            return [str(e)]
        problems = self._disk_problems(disks, version, deep)
        for m in disks:
            if m.overlay and state.inline is None and (BULK_KIND, m.unit) not in self._bulk:
                problems.append(f"disk {m.path}: the session holds no overlay contents for it")
        if deep and not problems:
            for m, u in zip(disks, self.units):
                if m.digest and m.unit not in self._checked and not self._same_contents(u, m, version, True):
                    problems.append(f"disk {m.path}: its contents changed since the session was saved "
                                    f"(same size and date, different data); put the disk back as it "
                                    f"was, or start with --fresh")
        self.keep_digests = not problems        # (what a look that refuses read is forgotten)
        return problems

    def check_fit(self, data: bytes, version: int) -> None:
        self._fit(data, version)

    def _fit(self, data: bytes, version: int) -> tuple[RingState, list[DiskMarker], dict[int, tuple[Any, int, int | None]]]:
        """The saved ring and markers checked against these disks, and where each saved
        overlay's contents lie. Digests read for the check are kept (cached at close)
        only when the state fits: a refused resume leaves the data folder as it was."""
        self.notes = []
        self.keep_digests = False
        state = parse_state(data, version)
        disks, inline = state.disks, state.inline
        problems = self._disk_problems(disks, version)
        if problems:
            raise StateMismatch(problems[0])
        loaded = RingState.from_dict(state.ring, self.ctx.memory.size, [u.backend.size for u in self.units])
        overlays: dict[int, tuple[Any, int, int | None]] = {}
        for m in disks:
            if not m.overlay:
                continue
            if inline is not None:                      # version 1: the contents follow the JSON
                blob = inline[m.unit]
                overlays[m.unit] = (_reader_of_bytes(blob), len(blob), None)
                continue
            ref = self._bulk.get((BULK_KIND, m.unit))
            if ref is None:
                raise StateError(f"disk {m.path}: the session holds no overlay contents for it")
            overlays[m.unit] = (_reader_of_file(ref.fd, ref.offset, ref.length), ref.length, ref.crc)
        self.keep_digests = True
        return loaded, disks, overlays

    def load_state(self, data: bytes, version: int) -> None:
        loaded, disks, overlays = self._fit(data, version)
        for note in self.notes:
            log.info("%s", note)
        self._save_digests()
        self._loaded_ring = loaded
        self._loaded_overlays = overlays
        for m, u in zip(disks, self.units):
            u.dirty = True
            if m.boot is not None:          # where the firmware's BLESS_DISK left the hint
                u.boot_flags = INFO_BOOT_HINT if m.boot else 0
        self.reset()

    def _disk_problems(self, disks: list[DiskMarker], version: int, deep: bool = False) -> list[str]:
        """What keeps the saved disks from matching the ones attached now. A disk whose
        identity changed (touched, restored from a copy) but not its size is read, and
        accepted with a note (``self.notes``) when its contents are the saved ones."""
        self._checked = set()
        if len(disks) != len(self.units):
            saved = ", ".join(m.path for m in disks) or "none"
            now = ", ".join(u.backend.identity().path for u in self.units) or "none"
            return [f"the session was saved with disks [{saved}] but this config attaches [{now}]; "
                    f"attach the same blkdevs, or start with --fresh"]
        problems = []
        for m, u in zip(disks, self.units):
            now = u.backend.identity()
            path = m.path
            if now.path != path:
                problems.append(f"unit {m.unit}: the session was saved with disk {path} but this config "
                                f"attaches {now.path} there; attach the same blkdevs, or start with --fresh")
                continue
            if m.overlay and not (u.backend.layered or u.spec.cow):
                problems.append(f"disk {path}: the session holds the guest's changes to it in a cow "
                                f"overlay; attach it with -cow to resume, or start with --fresh")
                continue
            if self.ctx.config.session_readonly and not u.spec.readonly and not u.spec.cow:
                problems.append(readonly_without_cow(path))
                continue
            saved = Identity(path, m.size, m.inode, m.mtime_ns, m.dev if m.dev is not None else now.dev)
            changes = saved.changes(now)
            if not changes:
                continue
            if now.size == saved.size and m.digest:
                self._checked.add(m.unit)
                if self._same_contents(u, m, version, deep):
                    self.notes.append(f"disk {path}: {'; '.join(changes)}; its contents are still the ones "
                                      f"the session was saved with (checked)")
                    continue
                changes.append("its contents differ (checked)")
            problems.append(f"disk {path} changed: {'; '.join(changes)}. The saved session no longer "
                            f"matches it: put the disk back as it was, or start with --fresh")
        return problems

    def _digests(self, u: Unit) -> DiskDigests:
        """The unit's disk digests, made on first use (from the cache when it holds them).
        A unit that writes its disk itself (no -cow) keeps them up to date from its writes."""
        if u.digests is None:
            disk = u.backend.disk()
            d = DiskDigests(disk.fd, disk.size, disk.path, block_device=not disk.regular)
            d.load_cache(self.ctx.data_dir())
            u.digests = d
            if not u.backend.layered and not u.readonly:
                u.watch = d
                d.flush_disk = u.flush
        return u.digests

    def follow_disks(self) -> None:
        """Keep every disk's digests up to date while the guest runs, so that F12 reads
        only what is left (called when the session may be saved)."""
        for u in self.units:
            self._digests(u).start_background()

    def _same_contents(self, u: Unit, m: DiskMarker, version: int, deep: bool) -> bool:
        """Whether the disk holds what the marker's digest says (``deep``: read it, never
        the cache). Markers of version 3 hold the root of region digests, older ones the
        SHA-256 of the whole disk."""
        plain = version < 3
        d = self._digests(u)
        if not plain and m.region != d.region:       # (a session of a molpy with other regions)
            disk = u.backend.disk()
            d = DiskDigests(disk.fd, disk.size, disk.path, region=m.region, block_device=not disk.regular)
            d.load_cache(self.ctx.data_dir())
        label = f"checking {os.path.basename(m.path)}"
        try:
            if plain:
                if deep or d.plain is None:
                    d.compute(label, plain=True)
                found = d.plain
            else:        # known: from the cache or the background thread; what is stale is read
                found = d.finish(label=label) if d.known and not deep else d.compute(label)
        except OSError as e:
            raise BlockError(str(e)) from None
        if d is not u.digests:
            self._computed.append(d)
        return found == m.digest

    def _save_digests(self) -> None:
        """Cache the digests known now (a disk read once, not per save or per resume)."""
        if not self.keep_digests:
            return
        for d in [u.digests for u in self.units if u.digests is not None] + self._computed:
            d.save_cache(self.ctx.data_dir())
        self._computed = []

    def reset(self) -> None:
        """Back to the state last loaded: the ring registers and every cow overlay."""
        self.ring = RingState(**self._loaded_ring.as_dict())
        for i, u in enumerate(self.units):
            u.flags = (u.flags & ~INFO_BOOT_HINT) | u.boot_flags
            if not u.dirty:
                continue
            u.unflushed = True
            saved = self._loaded_overlays.get(i)
            if saved is not None:
                u.backend.load_changes(*saved)
            else:
                u.backend.drop_changes()
            u.dirty = False

    def open_files(self) -> list[tuple[int, str]]:
        """(descriptor, what it is) of every disk and -cow overlay (no file molpy writes may be one)."""
        found = []
        for u in self.units:
            disk = u.backend.disk()
            found.append((disk.fd, f"the disk {disk.path}"))
            overlay = getattr(u.backend, "overlay", None)
            if overlay is not None:
                found.append((overlay.fd, f"the -cow overlay {overlay.path}"))
        return found

    def close(self) -> None:
        """Every disk's digests are cached when they are complete (unless a check of saved
        state refused them), then the disks are closed."""
        for u in self.units:
            if u.digests is not None:
                u.digests.close()
        self._save_digests()
        units, self.units = self.units, []
        for u in units:
            try:
                u.backend.close()
            except OSError as e:   # closing must not lose the others
                log.warning("osi_blk: closing %s: %s", u.backend.path, e)


# -- helpers --

def _reader_of_bytes(blob: bytes):
    view = memoryview(blob)

    def read(pos: int, buf: memoryview) -> int:
        part = view[pos:pos + len(buf)]
        buf[:len(part)] = part
        return len(part)
    return read


def _reader_of_file(fd: int, offset: int, length: int):
    def read(pos: int, buf: memoryview) -> int:
        n = min(len(buf), max(length - pos, 0))
        return os.preadv(fd, [buf[:n]], offset + pos) if n else 0
    return read


def open_units(specs: list[DiskSpec], cow_dir: str | None, inspect_only: bool = False) -> list[Unit]:
    """Open every blkdev in order; on a failure close the ones already open and re-raise.

    ``inspect_only`` (session verify) opens every disk read-only and makes no overlay."""
    units: list[Unit] = []
    try:
        for spec in specs:
            backend = open_blkdev(spec, cow_dir, inspect_only=inspect_only)
            units.append(Unit(spec=spec, backend=backend, flags=unit_flags(spec, backend)))
    except BaseException:
        for u in units:
            try:
                u.backend.close()
            except OSError:
                pass
        raise
    return units


def create(ctx: DeviceContext) -> OsiBlk:
    """The ablk device with the machine's blkdevs. BlockError (a disk that cannot be
    opened, a lock held by another molpy ...) propagates: the CLI prints it as one line."""
    specs = list(ctx.config.blkdevs)
    if not specs:                      # still served: the guest learns there are no disks
        return OsiBlk(ctx, [])
    units = open_units(specs, ctx.config.cow_dir, ctx.config.inspect_only)
    blk = OsiBlk(ctx, units, io_errors=(OSError, BlockError))
    if ctx.config.session_file and not ctx.config.session_readonly and not ctx.config.inspect_only:
        blk.follow_disks()
    return blk
