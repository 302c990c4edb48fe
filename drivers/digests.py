"""Content digests of disks that cost what changed, not what the disk holds.

A session's disk-sync marker records a digest of the disk's contents, so that a disk that
was only touched, or restored from an identical copy, can still be accepted. Hashing a
16 GiB disk at every F12 would take most of a minute, so the digest is built from parts:

- the disk is cut into regions (1 MiB, or larger so that there are at most 65,536), and
  each region has its SHA-256;
- the disk's digest is the **root**: SHA-256 of ``"molpy disk digest 1\\0"``, the disk size
  and the region size (two u64, big-endian), then every region digest in order;
- a region that lies in a hole of a sparse file (SEEK_DATA/SEEK_HOLE) is not read: its
  digest is that of zeros, so a sparse 16 GiB disk costs what its data costs;
- molpy serves every write the guest makes: a write only marks its regions stale (no
  hashing on the guest's path), and a background thread re-hashes stale regions while the
  guest runs; what is left is finished at save time on every core, beside the RAM write;
- the region digests are cached in molpy's data folder (``digests/``), keyed by the disk's
  identity (device, inode, size, mtime and ctime), so a disk is read once, not per save,
  and a content check after ``touch`` costs a full read only the first time.

A digest is trusted only for an identity observed before it was computed and unchanged
after it: the identity is read before a pass and again after it, and the identity the
digests hold for (``valid_key``) moves only with molpy's own writes (read before and after
each one). A change no write of molpy's explains (another program wrote a ``-ro`` disk or a
``-cow`` base while molpy had it open) drops every digest: the next finish reads the disk
again, and the cache is not written for it. A cache entry is written only when every region
digest is known for the disk exactly as it is then (at close, or after a check). The cache lives in molpy's own folder; it is
still checked field by field and by its own SHA-256 before use. ``session verify --deep``
never uses it: it reads the disk.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import os
import re
import struct
import threading
import time
from typing import Callable, ContextManager

from molpy.errors import DiskError
from molpy.files import HostFileError

from .digest_cache import DIGEST, MAX_REGIONS, identity_key, read_cache, write_cache

REGION_MIN = 1 << 20
ROOT_TAG = b"molpy disk digest 1\0"
IDLE_POLL = 0.1                 # the background thread looks for stale regions this often (s)
SETTLE = 0.05                   # ... and lets a burst of writes finish before it reads them
FLUSH_AFTER = 1.0               # a disk the guest stopped writing this long ago is flushed
BATCH = 64 << 20                # ... checked again after at most this much hashing

Progress = Callable[[int], None]                         # bytes done so far
ProgressFactory = Callable[[str, int], ContextManager[Progress]]
_progress_factory: ProgressFactory | None = None


def use_progress(factory: ProgressFactory | None) -> None:
    """Show long digest computations with ``factory(label, total_bytes)`` (the CLI's bar
    on a terminal); None shows nothing."""
    global _progress_factory
    _progress_factory = factory


class _NoProgress:
    def __enter__(self) -> Progress:
        return lambda done: None

    def __exit__(self, *exc) -> None:
        return None


def _progress(label: str, total: int) -> ContextManager[Progress]:
    if _progress_factory is None or total <= 0:
        return _NoProgress()
    return _progress_factory(label, total)


class DigestError(DiskError, OSError):
    """The disk could not be read for its digest; ``str()`` is one line naming it."""

    def __str__(self) -> str:
        return str(self.strerror)


def region_size(size: int) -> int:
    """1 MiB, doubled until the disk has at most MAX_REGIONS regions."""
    region = REGION_MIN
    while (size + region - 1) // region > MAX_REGIONS:
        region <<= 1
    return region


def valid_region(size: int, region: int) -> bool:
    """A region size a marker may name: a power of two from 4 KiB on, at most MAX_REGIONS regions."""
    return region >= 4096 and region & (region - 1) == 0 and (size + region - 1) // region <= MAX_REGIONS


@functools.lru_cache(maxsize=8)
def _zero_digest(length: int) -> bytes:
    return hashlib.sha256(bytes(length)).digest()


def root_of(size: int, region: int, digests: bytes | bytearray) -> str:
    """The disk's digest from its region digests."""
    h = hashlib.sha256(ROOT_TAG)
    h.update(struct.pack(">QQ", size, region))
    h.update(digests)
    return h.hexdigest()


def data_regions(fd: int, size: int, region: int) -> bytearray:
    """1 for each region that holds data, 0 for one that lies wholly in a hole. A file
    system that cannot tell holes (or a block device) has data everywhere."""
    n = (size + region - 1) // region
    found = bytearray(n)
    pos = 0
    try:
        while pos < size:
            try:
                start = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError as e:
                if e.errno == errno.ENXIO:          # no data after pos
                    break
                raise
            if start >= size:
                break
            end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
            a, b = start // region, (end - 1) // region
            found[a:b + 1] = b"\1" * (b + 1 - a)
            pos = max(end, start + 1)
    except OSError:
        return bytearray(b"\1" * n)
    return found


class DiskDigests:
    """The region digests of one open disk, kept up to date from molpy's own writes.

    ``digests`` holds one SHA-256 per region; ``stale`` has a 1 for each region whose digest
    must be (re)computed. A region is marked stale after the guest's data reached the disk,
    and a worker clears the mark (under the claim lock) before it reads the region, so a
    write that races with a worker always leaves the region stale again: every region not
    marked and not in flight holds the digest of what the disk holds now.

    One background thread follows the disk while the guest runs. Finishing (a save, a
    check) pauses it without stopping it: it takes no new region, its region in flight is
    waited for, and the finishing workers take the rest.
    """

    def __init__(self, fd: int, size: int, path: str, region: int | None = None,
                 block_device: bool = False) -> None:
        self.fd = fd
        self.size = size
        self.path = path
        self.region = region or region_size(size)
        self.count = (size + self.region - 1) // self.region
        self.block_device = block_device
        self.digests = bytearray(DIGEST * self.count)
        self.stale = bytearray(self.count)
        self.known = False          # every region not stale has its digest
        self.plain: str | None = None   # SHA-256 of the whole disk, when a check computed it
        self.flush_disk: Callable[[], None] | None = None   # write-behind for a disk the guest writes
        self.writes = 0             # guest writes seen (the write-behind looks at it)
        self._shift = self.region.bit_length() - 1
        self._lock = threading.Condition()
        self._cursor = 0
        self._paused = False        # the background thread takes no region
        self._inflight = 0          # regions claimed and not yet stored
        self._background: threading.Thread | None = None
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._cached_key: tuple[int, ...] | None = None
        self.valid_key: tuple[int, ...] | None = None   # the identity the digests hold for
        self._foreign = False       # the disk changed under molpy: no digest holds

    # -- the guest's writes --

    def mark(self, offset: int, length: int) -> None:
        """After a write reached the disk: its regions must be hashed again. Cheap: no
        lock, no hashing (one bytearray store, atomic under the GIL; never a clear)."""
        if length <= 0:
            return
        a = offset >> self._shift
        b = (offset + length - 1) >> self._shift
        if a == b:
            self.stale[a] = 1
        else:
            self.stale[a:b + 1] = b"\1" * (b + 1 - a)
        self.writes += 1
        self.plain = None
        if self.valid_key is not None:
            self.valid_key = identity_key(self.fd)

    def before_write(self) -> None:
        """Before one of molpy's writes: a change since the last one is another program's."""
        if self.valid_key is not None and identity_key(self.fd) != self.valid_key:
            self._foreign = True

    # -- filling the digests --

    def load_cache(self, folder: str) -> bool:
        """Take the digests from the cache when it holds them for this disk as it is now
        (before the guest runs)."""
        key = identity_key(self.fd)
        found = read_cache(folder, self.fd, self.size, self.region, key)
        if found is None:
            return False
        digests, plain = found
        with self._lock:
            self.digests[:] = digests
            self.plain = plain
            self.stale[:] = bytes(self.count)
            self.known = True
            self.valid_key = key
            self._foreign = False
        self._cached_key = key
        return True

    def _check_identity(self) -> tuple[int, ...]:
        """(Paused.) The identity now; digests that no longer hold for it (a change none of
        molpy's writes explains) are dropped and the disk's data regions marked stale."""
        key = identity_key(self.fd)
        with self._lock:
            if self._foreign or (self.valid_key is not None and key != self.valid_key):
                self.known = False
                self.plain = None
            if not self.known:
                self._prime(key)
        return key

    def _confirm(self, key: tuple[int, ...]) -> None:
        """After a pass that started at identity ``key``: the disk must not have changed
        while it was read, or the digests hold for nothing."""
        if identity_key(self.fd) != key:
            with self._lock:
                self.known = False
                self.plain = None
                self.valid_key = None
            raise DigestError(errno.EAGAIN, f"disk {self.path}: it changed while molpy read it for "
                                            f"its digest (another program writes it); try again "
                                            f"when nothing else writes it")

    def _prime(self, key: tuple[int, ...] | None = None) -> None:
        """(Under the lock.) Regions in holes get the digest of zeros, every region with
        data is marked stale; the guest's marks made meanwhile stay (only ones are stored).
        The digests to come hold for the identity observed now (``key``)."""
        self.valid_key = key if key is not None else identity_key(self.fd)
        self._foreign = False
        has_data = data_regions(self.fd, self.size, self.region)
        if self.count:
            self.digests[:] = _zero_digest(self.region) * self.count
            last = self.size - (self.count - 1) * self.region
            self.digests[-DIGEST:] = _zero_digest(last)
        for run in re.finditer(b"\1+", has_data):
            self.stale[run.start():run.end()] = b"\1" * (run.end() - run.start())
        self.known = True

    def _take(self, background: bool) -> int:
        """The next stale region (its mark cleared, counted in flight), or -1."""
        with self._lock:
            if background and (self._paused or self._stop.is_set()):
                return -1
            i = self.stale.find(1, self._cursor)
            if i < 0 and self._cursor:
                i = self.stale.find(1)
            if i < 0:
                self._cursor = 0
                return -1
            self.stale[i] = 0
            self._cursor = i + 1
            self._inflight += 1
            return i

    def _drain(self, background: bool, progress: Progress | None = None, limit: int = -1) -> None:
        """Hash stale regions until none is left (or ``limit`` regions are done)."""
        buf = memoryview(bytearray(self.region))
        while limit and (i := self._take(background)) >= 0:
            limit -= 1
            try:
                off = i * self.region
                n = min(self.region, self.size - off)
                try:
                    _read_exactly(self.fd, buf[:n], off)
                except OSError:
                    self.stale[i] = 1          # still unknown
                    raise
                self.digests[i * DIGEST:(i + 1) * DIGEST] = hashlib.sha256(buf[:n]).digest()
            finally:
                with self._lock:
                    self._inflight -= 1
                    if not self._inflight:
                        self._lock.notify_all()
            if progress is not None:
                progress(n)

    def _pause(self) -> None:
        """The background thread takes no more regions, and none is in flight."""
        with self._lock:
            self._paused = True
            while self._inflight:
                self._lock.wait()
            if not self.known:
                self._prime()

    def _resume(self) -> None:
        with self._lock:
            self._paused = False

    # -- the background thread --

    def start_background(self) -> None:
        """Keep the digests up to date while the guest runs: the first pass hashes what
        the cache did not give, then stale regions as they come; a disk the guest stopped
        writing is flushed (write-behind)."""
        if self._background is None:
            self._background = threading.Thread(target=self._follow, name=f"digests {self.path}", daemon=True)
            self._background.start()

    def _follow(self) -> None:
        # (not niced: a thread the host delays while it holds the GIL would stall the guest)
        seen, seen_at, flushed, settled = self.writes, time.monotonic(), self.writes, -1
        try:
            with self._lock:
                if not self.known:
                    self._prime()
            while not self._stop.is_set():
                # write-behind: flush a disk the guest stopped writing a while ago, so
                # that F12's flush finds nothing left to do
                if self.writes != seen:
                    seen, seen_at = self.writes, time.monotonic()
                elif seen != flushed and time.monotonic() - seen_at >= FLUSH_AFTER:
                    if self.flush_disk is not None:
                        self.flush_disk()
                    flushed = seen
                if not self._paused and self.stale.find(1) >= 0:
                    if self.writes != settled:          # the guest writes: let the burst end first
                        settled = self.writes
                        self._stop.wait(SETTLE)
                    self._drain(True, limit=BATCH // self.region or 1)
                    continue
                self._stop.wait(IDLE_POLL)
        except BaseException as e:          # reported by the next finish; the guest goes on
            self._error = e

    def _raise_error(self) -> None:
        if self._error is not None:
            err, self._error = self._error, None
            raise _as_digest_error(err, self.path)

    # -- results --

    def finish_later(self, workers: int = 2, label: str | None = None) -> Callable[[], str]:
        """Start finishing every stale region on ``workers`` threads and return at once;
        the returned function waits for them and gives the root. The guest must not write
        until then (a save: the guest is stopped). Long work shows a bar (``label``)."""
        self._pause()
        try:
            self._raise_error()
            key = self._check_identity()
        except BaseException:
            self._resume()
            raise
        stale = self.stale.count(1)
        bar = _progress(label or f"digest of {os.path.basename(self.path)}", stale * self.region) \
            if stale * self.region >= PROGRESS_MIN else None
        step = _Counter(bar.__enter__()) if bar is not None else None
        errors: list[BaseException] = []

        def work() -> None:
            try:
                self._drain(False, step)
            except BaseException as e:
                errors.append(e)
        threads = [threading.Thread(target=work, daemon=True) for _ in range(min(workers, stale))]
        for t in threads:
            t.start()

        def wait() -> str:
            try:
                for t in threads:
                    t.join()
            finally:
                if bar is not None:
                    bar.__exit__(None, None, None)
                self._resume()
            if errors:
                raise _as_digest_error(errors[0], self.path)
            self._confirm(key)
            return self.root()
        return wait

    def finish(self, workers: int = 2, label: str | None = None) -> str:
        return self.finish_later(workers, label)()

    def root(self) -> str:
        return root_of(self.size, self.region, self.digests)

    def compute(self, label: str, plain: bool = False) -> str:
        """Read the disk now (holes skipped) and return its root; ``plain`` also takes the
        SHA-256 of the whole disk in the same pass (for sessions of molpy 0.1.0)."""
        self._pause()
        try:
            with self._lock:
                self.known = False
                self._prime()
            if not plain:
                return self.finish_later(label=label)()
            key = self.valid_key
            total = self.stale.count(1) * self.region
            with _progress(label, total if total >= PROGRESS_MIN else 0) as progress:
                self.plain = self._sequential(progress)
            self._confirm(key)
        finally:
            self._resume()
        return self.root()

    def _sequential(self, progress: Progress) -> str:
        """Regions in order, each fed to its own digest and to the whole disk's."""
        whole = hashlib.sha256()
        buf = memoryview(bytearray(self.region))
        done = 0
        for i in range(self.count):
            off = i * self.region
            n = min(self.region, self.size - off)
            if self.stale[i]:
                self.stale[i] = 0
                try:
                    _read_exactly(self.fd, buf[:n], off)
                except OSError as e:
                    self.stale[i] = 1
                    raise _as_digest_error(e, self.path) from None
                self.digests[i * DIGEST:(i + 1) * DIGEST] = hashlib.sha256(buf[:n]).digest()
                whole.update(buf[:n])
                done += n
                progress(done)
            else:
                whole.update(_zero_block(n))
        return whole.hexdigest()

    def save_cache(self, folder: str) -> bool:
        """Remember the digests for the disk as it is now (nothing stale, nothing in flight:
        the background thread stopped or paused). Block devices are never cached: their
        node's date does not change when another program writes them."""
        if self.block_device or not self.known or self.stale.find(1) >= 0 or self._inflight:
            return False
        try:
            key = identity_key(self.fd)
            if self._foreign or key != self.valid_key:
                return False                  # changed under molpy: the digests hold for nothing
            if key == self._cached_key:
                return True
            write_cache(folder, self.fd, self.size, self.region, self.digests, self.plain)
        except (OSError, HostFileError):
            return False                      # a cache is only a saving
        self._cached_key = key
        return True

    def close(self) -> None:
        """Stop the background thread (its error, if any, no longer matters)."""
        thread, self._background = self._background, None
        if thread is not None:
            self._stop.set()
            thread.join()
        self._error = None


PROGRESS_MIN = 64 << 20           # checks that read less than this show no bar


class _Counter:
    """Adds up what several workers did, for one progress callback."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.done = 0
        self.lock = threading.Lock()

    def __call__(self, n: int) -> None:
        with self.lock:
            self.done += n
            done = self.done
        self.progress(done)


@functools.lru_cache(maxsize=2)
def _zero_block(n: int) -> bytes:
    return bytes(n)


def _read_exactly(fd: int, view: memoryview, offset: int) -> None:
    done = 0
    while done < len(view):
        n = os.preadv(fd, [view[done:]], offset + done)
        if n == 0:
            raise OSError(errno.EIO, f"the disk ends at byte {offset + done} (it shrank)")
        done += n


def _as_digest_error(e: BaseException, path: str) -> BaseException:
    if isinstance(e, OSError) and not isinstance(e, DigestError):
        return DigestError(e.errno or errno.EIO, f"disk {path}: cannot read it for its digest: "
                                                 f"{e.strerror or e}")
    return e
