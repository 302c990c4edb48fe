"""osi_blk in sessions: disk-sync markers, the identity and content checks that decide
whether saved state still fits the disks attached, digests, and -cow overlays saved as
bulk chunks and put back on resume and reset."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

from molpy.emulation.session import BulkRef, SessionError
from molpy.emulation.session_write import Bulk, Later
from molpy.emulation.state import StateError

from .blk_abi import INFO_BOOT_HINT
from .blk_state import BlkState, DiskMarker, RingState, parse_state
from .blk_units import Unit
from .block import BlockError, Identity
from .device import StateMismatch
from .digests import DiskDigests
from .disks import readonly_without_cow

log = logging.getLogger("molpy.osi_blk")

BULK_KIND = "COWD"       # a layered unit's changes (a -cow overlay's); instance = unit number


@dataclass
class BlkFit:
    """Saved osi_blk state found to fit this config's disks (phase one), what phase two
    builds the device from: the checked ring, the markers, each saved overlay's reader
    (unit -> read, length, crc), the identity of each disk as checked, the notes."""

    ring: RingState
    disks: list[DiskMarker]
    overlays: dict[int, tuple[Any, int, int | None]]
    identities: list[Identity]
    notes: list[str]


class DiskSessions:
    """Part of OsiBlk (drivers/osi_blk.py): its session methods, over its ``ctx``, ``units``,
    ``ring`` and the loaded state it keeps for reset."""

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
            return BlkState(ring, disks, self.version).encode()

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

    @classmethod
    def read_state(cls, data: bytes, version: int) -> BlkState:
        return parse_state(data, version)

    def check_fit(self, record: BlkState) -> BlkFit:
        """The saved ring and markers checked against these disks, and where each saved
        overlay's contents lie. Digests read for the check are kept (cached at close)
        only when the state fits: a refused resume leaves the data folder as it was."""
        self.notes = []
        self.keep_digests = False
        disks, inline = record.disks, record.inline
        problems = self._disk_problems(disks, record.version)
        if problems:
            raise StateMismatch(problems[0])
        ring = RingState.from_dict(record.ring, self.ctx.memory.size, [u.backend.size for u in self.units])
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
        return BlkFit(ring, disks, overlays, [u.backend.identity() for u in self.units], list(self.notes))

    def adopt(self, fit: BlkFit) -> None:
        """Take the state a stand-in found to fit (OsiBlk.restore): the disks opened now
        must be the ones it checked, or another program swapped one in between."""
        for u, checked in zip(self.units, fit.identities):
            changes = checked.changes(u.backend.identity())
            if changes:
                raise StateMismatch(f"disk {checked.path} changed while the session was resumed: "
                                    f"{'; '.join(changes)}; resume again, or start with --fresh")
        self.notes = fit.notes
        for note in self.notes:
            log.info("%s", note)
        self._loaded_ring = fit.ring
        self._loaded_overlays = fit.overlays
        for m, u in zip(fit.disks, self.units):
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


