"""``molpy run --check``: what molpy will use, one line a thing, for any config.

A plain molrc, the built-in config and a MOL installation's files get the same list (RAM,
the guest, each disk with its flags and where it was defined, firmware, oftree, nvram,
pseudo files, the session file); a MOL tree adds its installation, session number and
boot type first. Every line may hold words of the files, so each is made printable.
"""

from __future__ import annotations

import os


def describe_config(config, mconf, notes: list[str]) -> None:
    """Print what a run of ``config`` would use (``notes``: warnings of the reading)."""
    from ..molrc.errors import printable

    def say(line: str) -> None:
        print(printable(line))

    tree = config.mol_tree
    if tree is not None:
        say(f"MOL installation: lib {tree['lib']}, etc {tree['etc']}, data {tree['data']}")
        say(f"files read: {', '.join(config.files)}")
        say(f"session {mconf.session_id}, boot type {mconf.boot_type}")
    elif config.path:
        say(f"molrc: {config.path}")
        for path, times in _included(config.files[1:]):   # one a line: a long chain stays readable
            say(f"included: {path}" + (f" ({times} times)" if times > 1 else ""))
    else:
        say("molrc: none (the built-in config)")
    for line in _lines(config, mconf):
        say(line)
    for n in notes:
        say(n if tree is not None else f"note: {n}")


def _included(files: list[str]) -> list[tuple[str, int]]:
    counts: dict[str, int] = {}
    for path in files:
        counts[path] = counts.get(path, 0) + 1
    return list(counts.items())


def _mark(path: str | None) -> str:
    return "" if path is None or os.path.exists(path) else " (missing)"


def _from(config, key: str) -> str:
    return config.where(key) or "molpy default"


def _lines(config, mconf) -> list[str]:
    from ..drivers.demo_disk import is_demo_path
    from ..molrc.disks import disk_meaning

    tree = config.mol_tree
    out = [f"RAM: {mconf.ram_mib} MiB ({_from(config, 'ram_size')})"]
    if tree is None:
        out += _guest(config, mconf)
    for spec in mconf.blkdevs:
        mark = " (made at the first run: a demo disk)" if _mark(spec.path) and is_demo_path(spec.path) \
            else _mark(spec.path)
        out.append(f"disk: {spec.path} {' '.join(spec.flags) or '(no flags)'}: {disk_meaning(spec)} "
                   f"({spec.key} at {spec.source}){mark}")
    if not mconf.blkdevs:
        out.append("disks: none")
    if tree is None and any(spec.cow for spec in mconf.blkdevs):
        out.append(f"cow_dir: {mconf.cow_dir} ({config.where('cow_dir')}){_mark(mconf.cow_dir)}"
                   if mconf.cow_dir else "cow_dir: molpy's data directory (molpy default)")
    if tree is not None:
        for key in ("of_image", "bootx_image", "rom_image", "elf_image"):    # what MOL would boot
            path = config.get_path(key)
            if path and key == "of_image":
                out.append(f"firmware: {path} (of_image){_mark(path)}")
            elif path:
                out.append(f"boot file: {path} ({key}, not served by molpy){_mark(path)}")
    for key in ("oftree", "nvram"):
        if getattr(mconf, key):
            out.append(f"{key}: {getattr(mconf, key)}{_mark(getattr(mconf, key))}")
    if mconf.pseudofiles:
        out.append("pseudo files: " + ", ".join(f"{name} = {path}{_mark(path)}" for name, path in mconf.pseudofiles))
    out.append(_session(config, mconf))
    return out


def _guest(config, mconf) -> list[str]:
    """What boots, in Machine.boot's order: a Linux kernel, the bootfile, the firmware, the demo."""
    out = []
    if mconf.kernel:
        out.append(f"Linux kernel: {mconf.kernel} (kernel at {config.where('kernel')})"
                   f"{'' if mconf.kernel == 'linux' else _mark(mconf.kernel)}")
        for key in ("initrd", "dtb"):
            if getattr(mconf, key):
                out.append(f"{key}: {getattr(mconf, key)}{_mark(getattr(mconf, key))}")
    elif mconf.bootfile:
        out.append(f"guest: {mconf.bootfile} (bootfile at {config.where('bootfile')}){_mark(mconf.bootfile)}")
    elif mconf.of_image:
        out.append(f"firmware: {mconf.of_image} (of_image at {config.where('of_image')}){_mark(mconf.of_image)}")
    else:
        out.append("guest: the bundled demo guest (molpy default)")
    if mconf.boot_args:
        out.append(f"boot_args: {mconf.boot_args} ({config.where('boot_args')})")
    out.append(f"CPU: {mconf.cpu or '750'} ({_from(config, 'cpu')})")
    return out


def _session(config, mconf) -> str:
    path = mconf.session_file
    if path is None:
        if config.mol_tree is not None:
            return "session file: none (MOL sets no session_file; -s session_file=PATH saves sessions)"
        return "session file: none (F12 saves nothing; set session_file to save sessions)"
    how = ("read-only: it resumes any number of times" if mconf.session_readonly
           else "F12 writes it; it resumes once")
    held = "" if os.path.exists(path) else "; none saved yet"
    return f"session file: {path} ({how}{held}; session_file at {_from(config, 'session_file')})"
