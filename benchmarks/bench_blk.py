"""osi_blk throughput and cow commit, each against its reference in the same run.

Guest-driven I/O: the bundled bench.elf (``disk MODE KIB MIB``) reads or writes
unit 0 sequentially through SYNC_READ/SYNC_WRITE or the ring; the reference moves
the same bytes of the same file with os.preadv/os.pwritev in the same request size.
The file is in the page cache for both. Commit: ``molpy cow commit`` against
``qemu-img commit`` of a qcow2 overlay holding the same changes (made with qemu-io),
both timed as whole commands.
"""

from __future__ import annotations

import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from molpy.config import BlkdevSpec
from molpy.machine import MachineConfig

from .guest_run import process_env, timed_run

DISK_MIB = 256
REPEATS = 3
COMMIT_EXTENTS = 64            # 1 MiB changes at random places of the disk


def _fill(path: str, mib: int) -> None:
    chunk = random.Random(1).randbytes(1 << 20)
    with open(path, "wb") as f:
        for _ in range(mib):
            f.write(chunk)


def _guest(disk: str, mode: str, kib: int, cow_dir: str, cow: bool = False) -> float:
    spec = BlkdevSpec(path=disk, readonly=False, cow=cow)
    return timed_run(MachineConfig(ram_mib=32, blkdevs=[spec], cow_dir=cow_dir), f"disk {mode} {kib} {DISK_MIB}")


def _host(disk: str, write: bool, kib: int) -> float:
    buf = bytearray(kib << 10)
    fd = os.open(disk, os.O_RDWR)
    try:
        t = time.perf_counter()
        for off in range(0, DISK_MIB << 20, len(buf)):
            (os.pwritev if write else os.preadv)(fd, [buf], off)
        return time.perf_counter() - t
    finally:
        os.close(fd)


def _host_new(tmp: str, kib: int) -> float:
    path = os.path.join(tmp, "fresh.img")
    with open(path, "wb") as f:
        f.truncate(DISK_MIB << 20)
    try:
        return _host(path, True, kib)
    finally:
        os.unlink(path)


def _row(name: str, molpy_t: float, ref_t: float, target: str, note: str) -> dict:
    mb = DISK_MIB * 1.048576
    return {"name": name, "molpy": mb / molpy_t, "reference": mb / ref_t, "unit": "MB/s",
            "ratio": ref_t / molpy_t, "target": target, "note": note}


def _io_rows(tmp: str) -> list[dict]:
    disk = os.path.join(tmp, "disk.img")
    _fill(disk, DISK_MIB)
    cow_dir = os.path.join(tmp, "cow")
    os.makedirs(cow_dir, exist_ok=True)
    rows = []
    for kib in (64, 1024):
        size = f"{kib} KiB" if kib < 1024 else "1 MiB"
        ref_r = statistics.median(_host(disk, False, kib) for _ in range(REPEATS))
        for mode, how in (("sr", "SYNC_READ"), ("rr", "ring")):
            t = statistics.median(_guest(disk, mode, kib, cow_dir) for _ in range(REPEATS))
            note = "reference: os.preadv" + ("; 4 requests per KICK" if mode == "rr" else "")
            rows.append(_row(f"read {size} requests, {how}", t, ref_r, ">= 0.70", note))
        t = statistics.median(_guest(disk, "sr", kib, cow_dir, cow=True) for _ in range(REPEATS))
        rows.append(_row(f"read {size} requests, -cow (reads from the disk)", t, ref_r, ">= 0.60",
                         "reference: os.preadv"))
        ref_w = statistics.median(_host(disk, True, kib) for _ in range(REPEATS))
        t = statistics.median(_guest(disk, "sw", kib, cow_dir) for _ in range(REPEATS))
        rows.append(_row(f"write {size} requests, SYNC_WRITE", t, ref_w, "-", "reference: os.pwritev"))
        # an overlay's sectors are new to the file system: compare with writing a new sparse file
        ref_new = statistics.median(_host_new(tmp, kib) for _ in range(REPEATS))
        t = statistics.median(_guest(disk, "sw", kib, cow_dir, cow=True) for _ in range(REPEATS))
        rows.append(_row(f"write {size} requests, -cow (to the overlay)", t, ref_new, "-",
                         "reference: os.pwritev into a new sparse file"))
    return rows


def _commit_row(tmp: str) -> dict:
    name = "cow commit, 64 x 1 MiB changes on a 256 MiB disk"
    qemu_img, qemu_io = shutil.which("qemu-img"), shutil.which("qemu-io")
    if not qemu_img or not qemu_io:
        return {"name": name, "unit": "s", "target": ">= 1.0",
                "note": "skipped: qemu-img/qemu-io not installed"}
    from molpy.drivers.cow import CowBackend, Overlay
    from molpy.drivers.raw import RawBackend

    rng = random.Random(7)
    offsets = [rng.randrange(0, DISK_MIB) << 20 for _ in range(COMMIT_EXTENTS)]
    molpy_times, qemu_times = [], []
    # once untimed: Python compiles and caches molpy's modules, as on a user's first run
    subprocess.run([sys.executable, "-m", "molpy", "cow", "info", os.path.join(tmp, "none.cow")],
                   capture_output=True, env=process_env())
    for _ in range(REPEATS):
        base_m, base_q = os.path.join(tmp, "m.img"), os.path.join(tmp, "q.img")
        _fill(base_m, DISK_MIB)
        shutil.copyfile(base_m, base_q)
        ov_path = os.path.join(tmp, "m.cow")
        for p in (ov_path, os.path.join(tmp, "q.qcow2")):
            if os.path.exists(p):
                os.unlink(p)
        base = RawBackend(base_m, lock=False)
        cow = CowBackend(base, Overlay.create(ov_path, base.identity()))
        data = memoryview(bytes([0xAB]) * (1 << 20))
        for off in offsets:
            cow.write(off, data)
        cow.close()
        qcow = os.path.join(tmp, "q.qcow2")
        subprocess.run([qemu_img, "create", "-q", "-f", "qcow2", "-b", base_q, "-F", "raw", qcow],
                       check=True)
        cmds = [a for off in offsets for a in ("-c", f"write -q -P 0xab {off} 1M")]
        subprocess.run([qemu_io, "-f", "qcow2", *cmds, qcow], check=True, stdout=subprocess.DEVNULL)
        os.sync()              # both start with a clean page cache: fsync costs the same
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "molpy", "cow", "commit", ov_path], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=process_env())
        molpy_times.append(time.perf_counter() - t)
        os.sync()
        t = time.perf_counter()
        subprocess.run([qemu_img, "commit", "-q", qcow], check=True)
        qemu_times.append(time.perf_counter() - t)
        with open(base_m, "rb") as a, open(base_q, "rb") as b:
            assert a.read() == b.read(), "molpy and qemu-img committed different disks"
    m, q = statistics.median(molpy_times), statistics.median(qemu_times)
    return {"name": name, "molpy": m, "reference": q, "unit": "s", "ratio": q / m, "target": ">= 1.0",
            "note": "reference: qemu-img commit of a qcow2 overlay with the same data; whole commands "
                    "(Python's bytecode cache on, as for a user)"}


def run() -> list[dict]:
    with tempfile.TemporaryDirectory(prefix="molpy-bench-") as tmp:
        os.environ.setdefault("MOLPY_HOME", os.path.join(tmp, "home"))
        return _io_rows(tmp) + [_commit_row(tmp)]
