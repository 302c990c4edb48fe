"""osi_blk's saved state as typed records: the ring registers and one disk-sync marker
per unit, read from every state version molpy ever wrote.

Session state, version 3: UTF-8 JSON ``{"ring": RingState, "disks": [DiskMarker, ...]}``.
A marker holds the disk's identity (``path, size, inode, mtime_ns, dev``; for ``-cow``
the base disk's), ``cow``, ``readonly``, ``digest`` and ``region`` (the disk's contents
at save time: the root over the SHA-256 of each ``region`` bytes, drivers/digests.py),
``overlay`` (the unit held changes: they are the bulk chunk ``COWD``/unit) and ``boot``
(it holds the boot hint). Version 2 had no ``region`` and ``digest`` was the SHA-256 of
the whole disk (molpy 0.1.0); version 1 was ``"MPBK" | u16 1 | u32 n | JSON`` with
``overlay`` a byte length and the overlay contents inline after the JSON.

The file is untrusted: every field is checked against the machine it is loaded into
(a ring outside RAM, a request past a disk's end are refused), and StateError names it.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass

from molpy.emulation.records import as_doc, nullable, parse, saved
from molpy.emulation.state import StateError, boolean, integer, loads, record, text, u32, u64

from .blk_abi import DESC_SIZE, MAX_RING_EL, OP_NONE, OPS, REQ_READ, REQ_WRITE
from .digests import valid_region

MAX_DISKS = 64           # markers a state may hold

LEGACY_MAGIC = b"MPBK"
_LEGACY_HEAD = struct.Struct(">4sHI")


def _range(lo: int, hi: int):
    return lambda value, what: integer(value, what, lo, hi)


def _sha256(value, what: str) -> str:
    digest = text(value, what, 64)
    if len(digest) != 64 or digest.strip("0123456789abcdef"):
        raise StateError(f"{what}: not a SHA-256")
    return digest


@dataclass
class RingState:
    """The engine's registers; the descriptors themselves live in guest RAM."""

    base: int = saved(u32, default=0)
    n_el: int = saved(_range(0, MAX_RING_EL), default=0)      # 0: no ring set up
    running: bool = saved(boolean, default=False)
    head: int = saved(u32, default=0)          # slot of the last descriptor taken (MOL's req_head)
    completed: int = saved(u32, default=0)     # descriptors completed since CNTRL start (IRQ_ACK r4)
    irq: bool = saved(boolean, default=False)  # the (virtual) interrupt line
    cur_unit: int = saved(_range(-1, MAX_DISKS - 1), default=-1)   # the request the next data entries belong to
    cur_op: int = saved(_range(0, max(OPS)), default=OP_NONE)
    cur_pos: int = saved(_range(0, 1 << 63), default=0)   # byte offset on the disk of the next data entry

    def as_dict(self) -> dict:
        return as_doc(self)

    @classmethod
    def from_dict(cls, d, ram_size: int, disk_sizes: list[int]) -> "RingState":
        """The ring registers from a saved record, checked against this machine: a crafted
        session must not aim the engine outside RAM or outside a disk."""
        r = parse(cls, d, "osi_blk ring", 1, label="ring", retired=("event", "last_error"))
        if r.n_el & (r.n_el - 1):
            raise StateError("ring n_el: not a power of two")
        if r.base + r.n_el * DESC_SIZE > ram_size or (r.base and r.base >= ram_size):
            raise StateError("ring base: the ring lies outside RAM")
        if r.running and not r.n_el:
            raise StateError("ring running: no ring is set up")
        if r.head > max(r.n_el - 1, 0):
            raise StateError(f"ring head: {r.head} is out of range (0 to {max(r.n_el - 1, 0)})")
        if r.cur_unit >= len(disk_sizes):
            raise StateError(f"ring cur_unit: {r.cur_unit} is out of range (-1 to {len(disk_sizes) - 1})")
        if r.cur_op in (REQ_READ, REQ_WRITE) and r.cur_unit < 0:
            raise StateError("ring cur_op: a read or write with no unit")
        limit = disk_sizes[r.cur_unit] if r.cur_unit >= 0 and r.cur_op in (REQ_READ, REQ_WRITE) else 0
        if r.cur_pos > limit:
            raise StateError(f"ring cur_pos: {r.cur_pos} is out of range (0 to {limit})")
        return r


@dataclass
class DiskMarker:
    """One unit's disk-sync marker (see the module docstring)."""

    unit: int = saved(_range(0, MAX_DISKS - 1))
    path: str = saved(text)
    size: int = saved(u64)
    inode: int = saved(u64)
    mtime_ns: int = saved(_range(-(1 << 63), (1 << 63) - 1))
    cow: bool = saved(boolean)
    readonly: bool = saved(boolean)
    digest: str | None = saved(nullable(_sha256))
    overlay: bool = saved(boolean)                 # (version 1: a byte length, or null)
    region: int | None = saved(nullable(_range(1, 1 << 62)), since=3, default=None)
    dev: int | None = saved(nullable(u64), may_lack=True, default=None)
    boot: bool | None = saved(nullable(boolean), may_lack=True, default=None)

    @classmethod
    def from_doc(cls, doc, i: int, version: int) -> "DiskMarker":
        checks = {"overlay": nullable(_range(0, 1 << 62))} if version == 1 else None
        m = parse(cls, doc, f"osi_blk disk {i}", version, label=f"disk {i}", checks=checks)
        if m.unit != i:
            raise StateError(f"disk {i} unit: {m.unit} is out of range ({i} to {i})")
        if m.digest is not None and version >= 3 and (m.region is None or not valid_region(m.size, m.region)):
            raise StateError(f"disk {i} region: {m.region} bytes is not a region size molpy uses")
        return m


@dataclass
class BlkState:
    """What a session holds for osi_blk: the ring (checked once the machine's RAM and
    disks are known), the markers, the state version they were read from, and version
    1's inline overlay contents by unit."""

    ring: dict
    disks: list[DiskMarker]
    version: int
    inline: dict[int, bytes] | None = None

    def encode(self) -> bytes:
        return json.dumps({"ring": self.ring, "disks": [as_doc(m) for m in self.disks]},
                          separators=(",", ":")).encode()


def parse_state(data: bytes, version: int) -> BlkState:
    """Saved osi_blk state of ``version`` as records; StateError naming the field when it is
    damaged or crafted."""
    if version >= 2:
        doc, inline = loads(data, "osi_blk state"), None
    else:
        if len(data) < _LEGACY_HEAD.size:
            raise StateError("osi_blk state is truncated")
        magic, legacy, n = _LEGACY_HEAD.unpack_from(data)
        if magic != LEGACY_MAGIC or legacy != 1 or _LEGACY_HEAD.size + n > len(data):
            raise StateError("osi_blk state (version 1) is damaged")
        doc, inline = loads(data[_LEGACY_HEAD.size:_LEGACY_HEAD.size + n], "osi_blk state"), {}
    doc = record(doc, "osi_blk state", ("ring", "disks"))
    if type(doc["disks"]) is not list or len(doc["disks"]) > MAX_DISKS:
        raise StateError(f"osi_blk state: disks is not a list of at most {MAX_DISKS} markers")
    disks = [DiskMarker.from_doc(m, i, version) for i, m in enumerate(doc["disks"])]
    if inline is None:
        return BlkState(doc["ring"], disks, version)
    pos = _LEGACY_HEAD.size + n
    for m in disks:
        size, m.overlay = m.overlay, m.overlay is not None
        if size is None:
            continue
        if pos + size > len(data):
            raise StateError("osi_blk state is truncated (overlay data missing)")
        inline[m.unit] = bytes(data[pos:pos + size])
        pos += size
    if pos != len(data):
        raise StateError("osi_blk state has trailing bytes")
    return BlkState(doc["ring"], disks, version, inline)
