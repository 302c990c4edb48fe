"""What ``molpy run`` checks before it starts, and ``molpy run --check`` reports in full.

Every problem is one line naming the molrc key and the path. ``run`` refuses with the
first (before anything is opened, so a FIFO or a directory where a file belongs can
neither block nor reach a traceback); ``--check`` (deep) lists them all and also reads
what a run would read: the bootfile as an ELF, the session file and its disk markers.
"""

from __future__ import annotations

import os
import stat

from .files import kind_of


def _stat(path: str) -> os.stat_result | None:
    try:
        return os.stat(path)
    except FileNotFoundError:
        return None


def not_a_regular_file(path: str, what: str) -> str | None:
    """One line when ``path`` exists but is a directory, a FIFO, a device ... (None: fine or absent)."""
    try:
        st = os.stat(path)
    except OSError:
        return None                                 # absent or unreadable: the open says why
    if stat.S_ISREG(st.st_mode):
        return None
    return f"{path} is {kind_of(st.st_mode)}, not a {what}"


def problems(mconf, *, deep: bool = False, notes: list[str] | None = None,
             log: str | None = None) -> list[str]:
    """Every problem a run of ``mconf`` would meet; ``deep`` also reads the files' contents
    (and a disk accepted by a content check adds a line to ``notes``). ``log``: the file
    the guest's log goes to (``--log``)."""
    found: list[str] = []
    found += elf_problems("bootfile", mconf.bootfile, mconf, deep)
    found += elf_problems("of_image", mconf.of_image, mconf, deep)
    found += kernel_problems(mconf, deep)
    disks = disk_problems(mconf)
    found += disks
    found += cow_dir_problems(mconf)
    found += nvram_problems(mconf)
    found += oftree_problems(mconf) if deep else []
    found += written_file_problems(mconf, log)
    found += session_problems(mconf, deep and not disks, notes)   # the match needs the disks
    return found


def nvram_problems(mconf) -> list[str]:
    """The run's rules for the ``nvram:`` image, applied by --check too: a regular file (not
    a link, FIFO or folder), read as the run reads it (so /proc/self/mem fails here too),
    in a folder molpy can write the new image into."""
    path = mconf.nvram
    if not path:
        return []
    from .drivers.nvram import NvramError, read_image
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        st = None
    except OSError as e:
        return [f"nvram {path}: {e.strerror}"]
    if st is not None:
        if stat.S_ISLNK(st.st_mode):
            return [f"nvram {path} is a symbolic link; molpy does not follow it here (name the image itself)"]
        if not stat.S_ISREG(st.st_mode):
            return [f"nvram {path} is {kind_of(st.st_mode)}, not an NVRAM image"]
        try:
            read_image(path)
        except NvramError as e:
            return [str(e)]
    return []


def oftree_problems(mconf) -> list[str]:
    """--check reads the ``oftree`` file as a run does: a file over the tree's limits
    (oftree.MAX_BYTES in its saved form, MAX_NODES nodes) is named here, not at boot."""
    path = mconf.oftree
    if not path:
        return []
    from .drivers.devtree import read_tree_file
    from .drivers.oftree import TreeError
    from .drivers.oftree_file import parse_tree
    import logging
    quiet = logging.getLogger("molpy.oftree")
    level = quiet.level
    quiet.setLevel(logging.ERROR)                # (the parse's notes are the run's to give)
    try:
        parse_tree(read_tree_file(path), path)
    except TreeError as e:
        return [f"oftree {e}"]
    except OSError as e:
        return [f"oftree {path}: {e.strerror or e}"]
    finally:
        quiet.setLevel(level)
    return []


def _file_id(path: str | None) -> tuple[int, int] | None:
    if not path:
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def protected_files(mconf) -> dict[tuple[int, int], str]:
    """(device, inode) -> what it is, for every file of the run molpy must never write over:
    the disks, their -cow overlays, the session file."""
    from .drivers.overlays import overlay_name
    from .files import data_dir

    found: dict[tuple[int, int], str] = {}
    for spec in mconf.blkdevs:
        key = _file_id(spec.path)
        if key is not None:
            found.setdefault(key, f"the disk {spec.path}")
        if spec.cow:
            folder = mconf.cow_dir or data_dir()
            stem = overlay_name(spec.path)[:-len(".cow")]
            try:
                names = [e.name for e in os.scandir(folder) if e.name.startswith(stem)]
            except OSError:
                names = []
            for name in names:
                key = _file_id(os.path.join(folder, name))
                if key is not None:
                    found.setdefault(key, f"the -cow overlay {os.path.join(folder, name)} of {spec.path}")
    key = _file_id(mconf.session_file)
    if key is not None:
        found.setdefault(key, f"the session file {mconf.session_file}")
    return found


def written_file_problems(mconf, log: str | None = None) -> list[str]:
    """A file molpy writes (the NVRAM image, the log, the session file) that is one of the
    run's disks or overlays, or the session: compared by device and inode, not by name, so
    a second name or a hard link is caught too."""
    from .files import data_dir

    protected = protected_files(mconf)
    writers = []
    if mconf.nvram and not mconf.inspect_only:
        writers.append(("nvram", mconf.nvram, "its NVRAM"))
    if log != "-":
        writers.append(("the log", log or os.path.join(data_dir(), "molpy.log"), "the guest's log"))
    if mconf.session_file and not mconf.session_readonly:
        writers.append(("session_file", mconf.session_file, "the session (F12)"))
    found = []
    for i, (key, path, what) in enumerate(writers):
        ident = _file_id(path)
        if ident is None:
            continue
        hit = protected.get(ident)
        if hit is None:
            hit = next((f"the {k2} file {p2}" for k2, p2, _ in writers[:i] if _file_id(p2) == ident), None)
        if hit is not None and not (key == "session_file" and hit.startswith("the session file")):
            found.append(f"{key} {path} is {hit}: molpy would write {what} over it; name another file")
    return found


def elf_problems(key: str, path: str | None, mconf, deep: bool) -> list[str]:
    """The guest (bootfile) or firmware (of_image) ELF a boot would load."""
    if not path:
        return []
    try:
        st = _stat(path)
    except OSError as e:
        return [f"{key} {path}: {e.strerror}"]
    if st is None:
        # A resumed session does not need it, so only --check says so before the boot does.
        return [f"{key} {path} does not exist"] if deep else []
    if not stat.S_ISREG(st.st_mode):
        return [f"{key} {path} is {kind_of(st.st_mode)}, not a guest ELF file"]
    if deep:
        from .boot import BootError, read_elf
        try:
            read_elf(path, mconf.ram_mib << 20)
        except BootError as e:
            return [f"{key} {e}"]
    return []


def kernel_problems(mconf, deep: bool) -> list[str]:
    """``kernel:``, ``initrd:`` and ``dtb:`` as a Linux boot reads them. A run checks only
    that none is a FIFO, a folder ... (a resume needs none of them); --check reads them as
    the boot would: the kernel as an ELF, the initrd against the RAM, the device tree."""
    files = [("initrd", mconf.initrd, "initrd image"), ("dtb", mconf.dtb, "flattened device tree")]
    if mconf.kernel and mconf.kernel != "linux":
        files.insert(0, ("kernel", mconf.kernel, "vmlinux ELF file"))
    found = []
    for key, path, what in files:
        problem = path and not_a_regular_file(path, what)
        if problem:
            found.append(f"{key} {problem}")
    if not deep or found:
        return found
    if not mconf.kernel:
        return [f"{key} {path} is set, but no kernel: boots it" for key, path, _ in files if path]
    from .boot import BootError
    from .linux.boot import plan_kernel, resolve_kernel
    try:
        plan_kernel(mconf.ram_mib << 20, resolve_kernel(mconf.kernel), mconf.boot_args or "",
                    cpu=mconf.cpu, initrd=mconf.initrd, dtb=mconf.dtb)
    except BootError as e:
        text = str(e)
        return [text if text.startswith("kernel:") else f"kernel {text}"]
    return []


def disk_problems(mconf) -> list[str]:
    from .drivers.demo_disk import is_demo_path
    from .drivers.formats import probe_path, refusal_for

    found = []
    seen: dict[tuple[int, int] | str, str] = {}
    for spec in mconf.blkdevs:
        where = f"(blkdev at {spec.source or 'the config'})"
        try:
            st = _stat(spec.path)
        except OSError as e:
            found.append(f"disk {spec.path}: {e.strerror} {where}")
            continue
        if st is None:
            if not is_demo_path(spec.path):                            # a run makes a demo disk
                found.append(f"disk {spec.path} does not exist {where}")
            key: tuple[int, int] | str = os.path.abspath(spec.path)
        else:
            if not (stat.S_ISREG(st.st_mode) or stat.S_ISBLK(st.st_mode)):
                found.append(f"disk {spec.path} is {kind_of(st.st_mode)}, not a disk image {where}")
                continue
            writes = not spec.readonly and not spec.cow
            if not os.access(spec.path, os.R_OK | (os.W_OK if writes else 0)):
                how = " read-write" if writes else ""
                found.append(f"disk {spec.path}: cannot open it{how}: permission denied {where}")
            else:                  # the run's own rule (open_blkdev): no container as a raw disk
                refused = refusal_for(spec, probe_path(spec.path))
                if refused:
                    found.append(refused)
            key = (st.st_dev, st.st_ino)
        if key in seen:
            found.append(f"disk {spec.path} is listed twice (blkdev at {seen[key]} and {spec.source or 'the config'})")
        else:
            seen[key] = spec.source or "the config"
    return found


def cow_dir_problems(mconf) -> list[str]:
    """A cow_dir the molrc names must exist: molpy creates only its own data folder."""
    path = mconf.cow_dir
    if not path or not any(spec.cow for spec in mconf.blkdevs):
        return []
    try:
        st = _stat(path)
    except OSError as e:
        return [f"cow_dir {path}: {e.strerror}"]
    if st is None:
        from .config import data_dir
        if os.path.abspath(path) == os.path.abspath(data_dir()):
            return []
        return [f"cow_dir {path} does not exist (create the folder, or drop cow_dir to use "
                f"molpy's data folder)"]
    if not stat.S_ISDIR(st.st_mode):
        return [f"cow_dir {path} is {kind_of(st.st_mode)}, not a folder"]
    if not os.access(path, os.W_OK | os.X_OK):
        return [f"cow_dir {path}: cannot create the -cow overlays there: permission denied"]
    return []


def session_problems(mconf, deep: bool, notes: list[str] | None = None) -> list[str]:
    path = mconf.session_file
    if not path:
        return []
    if mconf.session_readonly:
        from .drivers.disks import readonly_without_cow
        writable = [readonly_without_cow(spec.path) for spec in mconf.blkdevs if not spec.readonly and not spec.cow]
        if writable:
            return writable
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        return [f"session_file {path}: its folder {folder} does not exist"]
    try:
        st = _stat(path)
    except OSError as e:
        return [f"session_file {path}: {e.strerror}"]
    if st is not None and not stat.S_ISREG(st.st_mode):
        return [f"session_file {path} is {kind_of(st.st_mode)}, not a session file"]
    if not deep:
        return []
    found = []
    if not mconf.session_readonly and not os.access(folder, os.W_OK | os.X_OK):
        found.append(f"session_file {path}: its folder {folder} is not writable (F12 could not save)")
    if st is not None:
        found += session_match_problems(path, mconf, notes)
    return found


def session_match_problems(path: str, mconf, notes: list[str] | None = None) -> list[str]:
    """Whether the saved session in ``path`` would resume with the molrc's disks."""
    from .emulation.session import SessionError, open_session
    from .errors import Error
    from .resumecheck import against_disks

    try:
        s = open_session(path)
    except SessionError as e:
        return [f"session_file: {e} (molpy run --fresh boots instead)"]
    try:
        return [f"session_file {path}: {p}" for p in against_disks(s, mconf, deep=False, notes=notes)]
    except Error as e:               # a disk that cannot be opened, a device's bad file ...
        return [f"session_file {path}: {e}"]
    finally:
        s.close()
