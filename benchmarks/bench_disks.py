"""Sessions at real disk sizes: F12 with a 16 GiB disk, and a session that holds a 1 GiB overlay.

F12: the same machine (64 MiB RAM, 3/4 of it non-zero as in bench_session) saved with no
disk and with a 16 GiB sparse disk attached -rw, on which the guest (bench.elf, SYNC_WRITE
of 1 MiB requests) has just written 100 MiB. Two figures, because when the writes happened
decides what is left to do at F12: "idle" saves after the guest has been idle for 2 s (the
background thread has re-hashed the written regions and flushed the disk); "at once" saves
right after the guest's last write (the 100 MiB are re-hashed and flushed during the save).
Both are `Machine.save_session()` as F12 calls it, timed in the library. The reference
(no disk) idles 2 s too, while the host writes the same 100 MiB to a file beside it and
flushes them after a second (see _f12).

Overlay: a session save of a machine whose -cow overlay holds 1 GiB of changes, against a
raw copy of the same bytes (copy_file_range of the overlay's data into a new unnamed file,
sized first, then fsync: the save fsyncs too; neither replaces an older file), in turn on
the same overlay. Peak RSS of the saving process is read from VmHWM, reset
just before the save.
"""

from __future__ import annotations

import os
import random
import statistics
import tempfile
import time

from molpy import boot
from molpy.config import BlkdevSpec
from molpy.drivers.raw import create_image
from molpy.machine import Machine, MachineConfig, Stop

RAM_MIB = 64
DISK = 16 << 30
WRITTEN_MIB = 100
OVERLAY = 1 << 30
REPEATS = 9
F12_REPEATS = 15               # F12 is short and the host shared: more runs for a steady median
BUF_BASE = 0x400000                # where bench.elf's disk mode takes its data from
FILL_AT = 16 << 20


def _fill_ram(m: Machine) -> None:
    """3/4 of RAM non-zero (from 16 MiB up), as bench_session's saves."""
    chunk = random.Random(RAM_MIB).randbytes(1 << 20)
    for off in range(FILL_AT, (RAM_MIB << 20) * 3 // 4, 1 << 20):
        m.memory.view[off:off + len(chunk)] = chunk


def _f12(tmp: str, disk: bool, idle: float) -> float:
    """One F12 save, timed. With ``disk`` the guest writes 100 MiB to the attached 16 GiB
    disk, then idles ``idle`` s. Without, the host does the same file work beside the
    machine (a new 16 GiB file, 100 MiB written, flushed a second later, as molpy's
    write-behind does): this host's ext4 (mounted with discard) slowed the next save after
    such work, so both sides must do it for the ratio to show molpy's own cost."""
    session = os.path.join(tmp, "f12.session")
    path = os.path.join(tmp, "big.img")
    if os.path.exists(path):
        os.unlink(path)
    create_image(path, DISK)
    specs, args = ([BlkdevSpec(path=path, readonly=False)], f"disk sw 1024 {WRITTEN_MIB}") if disk else ([], "spin 1")
    data = random.Random(3).randbytes(1 << 20)
    m = Machine(MachineConfig(ram_mib=RAM_MIB, blkdevs=specs, session_file=session))
    try:
        m.boot(str(boot.bundled_guest("bench")), args)
        m.memory.view[BUF_BASE:BUF_BASE + (1 << 20)] = data
        os.sync()                                     # no earlier run's data left to write back
        stop = m.run()
        assert stop is Stop.EXIT and m.exit_code == 0, (stop, m.exit_code)
        if not disk:
            fd = os.open(path, os.O_WRONLY)
            for i in range(WRITTEN_MIB):
                os.pwrite(fd, data, i << 20)
        _fill_ram(m)
        if not disk:
            time.sleep(min(idle, 1.1))
            os.fsync(fd)
            os.close(fd)
            time.sleep(max(idle - 1.1, 0))
        else:
            time.sleep(idle)
        t = time.perf_counter()
        m.save_session()
        return time.perf_counter() - t
    finally:
        m.close()


def _overlay_machine(tmp: str) -> tuple[Machine, object]:
    base = os.path.join(tmp, "base.img")
    if not os.path.exists(base):
        create_image(base, 2 * OVERLAY)
    cow = os.path.join(tmp, "cow")
    os.makedirs(cow, exist_ok=True)
    m = Machine(MachineConfig(ram_mib=RAM_MIB, blkdevs=[BlkdevSpec(path=base, readonly=False, cow=True)],
                              cow_dir=cow, session_file=os.path.join(tmp, "cow.session")))
    backend = next(d for d in m.devices if d.kind == "ABLK").units[0].backend
    chunk = memoryview(random.Random(5).randbytes(8 << 20))
    for off in range(0, OVERLAY, len(chunk)):          # every other 8 MiB of a 2 GiB disk
        backend.write(2 * off, chunk)
    return m, backend


def _hwm_reset() -> None:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def _status(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise KeyError(field)


def _overlay_save(m: Machine) -> tuple[float, float, float]:
    """(seconds, RSS before in MiB, peak RSS during the save in MiB)."""
    if os.path.exists(m.config.session_file):     # nothing replaced: the copy writes a new file too
        os.unlink(m.config.session_file)
    os.sync()
    before = _status("VmRSS")
    _hwm_reset()
    t = time.perf_counter()
    m.save_session()
    return time.perf_counter() - t, before, _status("VmHWM")


def _raw_copy(tmp: str, backend) -> float:
    """copy_file_range of the overlay's held bytes into a new (unnamed, sized) file, then fsync."""
    extents = backend.block_status()
    os.sync()
    t = time.perf_counter()
    fd = os.open(tmp, os.O_TMPFILE | os.O_RDWR)
    os.ftruncate(fd, OVERLAY)                      # sized first, as the session file is
    pos = 0
    for e in extents:
        src, left = e.offset, e.count * 512
        while left:
            n = os.copy_file_range(e.fd, fd, left, src, pos)
            src, pos, left = src + n, pos + n, left - n
    os.fsync(fd)
    dt = time.perf_counter() - t
    os.close(fd)
    return dt


def _write_row(tmp: str) -> dict:
    """The guest's write path with and without the digests following it (a session_file
    set or not), 64 KiB SYNC_WRITE requests over a 256 MiB disk full of data."""
    from .bench_blk import DISK_MIB, _fill
    from .guest_run import timed_run

    disk = os.path.join(tmp, "w.img")
    _fill(disk, DISK_MIB)
    times: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(REPEATS):
        for follow in (False, True):
            conf = MachineConfig(ram_mib=32, blkdevs=[BlkdevSpec(path=disk, readonly=False)],
                                 session_file=os.path.join(tmp, "w.session") if follow else None)
            times[follow].append(timed_run(conf, f"disk sw 64 {DISK_MIB}"))
    mb = DISK_MIB * 1.048576
    t, ref = statistics.median(times[True]), statistics.median(times[False])
    return {"name": "write 64 KiB requests, SYNC_WRITE, disk digests followed", "molpy": mb / t,
            "reference": mb / ref, "unit": "MB/s", "ratio": ref / t, "target": "-",
            "note": "reference: the same run with no session_file (no digests kept)"}


def run() -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="molpy-bench-") as tmp:
        os.environ["MOLPY_HOME"] = os.path.join(tmp, "home")
        _f12(tmp, False, 0)                                   # imports and file system warm
        cases = {"none": (False, 2.0), "idle": (True, 2.0), "at once": (True, 0.0)}
        times: dict[str, list[float]] = {k: [] for k in cases}
        for _ in range(F12_REPEATS):                           # interleaved: the host's load drifts
            for k, (disk, idle) in cases.items():
                times[k].append(_f12(tmp, disk, idle))
        none = statistics.median(times["none"])
        for k, how in (("idle", "the guest idle for 2 s before F12"), ("at once", "F12 right after the last write")):
            t = statistics.median(times[k])
            rows.append({"name": f"F12, 64 MiB RAM, 16 GiB sparse disk with 100 MiB just written ({how})",
                         "molpy": t, "reference": none, "unit": "s", "ratio": none / t, "target": ">= 0.9",
                         "note": "reference: the same save with no disk attached (the host writing and flushing "
                                 "the same 100 MiB to a file beside it)"})
        m, backend = _overlay_machine(tmp)          # one overlay, saved and copied in turn
        try:
            _raw_copy(tmp, backend)                 # the page cache warm for both
            saves, raws = [], []
            for _ in range(3):                      # in runs of three: a copy right after a save
                raws += [_raw_copy(tmp, backend) for _ in range(3)]     # was up to 3x slower here
                saves += [_overlay_save(m) for _ in range(3)]
        finally:
            m.close()
        save, raw = statistics.median(s[0] for s in saves), statistics.median(raws)
        rows.append({"name": "session save with a -cow overlay holding 1 GiB", "molpy": save, "reference": raw,
                     "unit": "s", "ratio": raw / save, "target": ">= 0.8",
                     "note": "reference: copy_file_range of the same bytes into a new file + fsync; molpy also "
                             "reads them back for the CRC-32 on a second thread"})
        _, before, peak = max(saves, key=lambda s: s[2] - s[1])             # the save that grew most
        rows.append({"name": "peak RSS during that save", "molpy": peak, "reference": before, "unit": "MiB",
                     "ratio": None, "target": "bounded",
                     "note": f"reference: RSS before the save; the save adds {peak - before:.0f} MiB "
                             f"(VmHWM, reset before the save)"})
        rows.append(_write_row(tmp))
    return rows
