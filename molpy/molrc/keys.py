"""Which keys molpy serves, and how the others are reported: one line per group.

Real MOL configurations define dozens of keys for devices molpy does not have (video,
sound, network ...). They are never an error; each group gets one line, never one line
per key. Keys that no group knows (a typo in the user's own molrc, say) are listed with
their file and line, on one line too.
"""

from __future__ import annotations

from collections.abc import Callable

from .table import CMDLINE, PREDEFINED, Config

# keys molpy reads (MachineConfig.from_config and the disk rules)
SERVED = frozenset({
    "ram_size", "bootfile", "boot_args", "cpu", "blkdev", "blkdev_mol", "cow_dir", "session_file",
    "session_readonly", "session", "boot_type", "boot_method", "oftree", "nvram", "of_image",
    "pseudofile", "pseudofile_", "@pseudofile",
    # read by the firmware services: BOOT_HELPER's string lookups, the CPU node, local time
    "macos_rompath", "macos_rompath_", "ppc601_cpu", "ppc603_cpu", "ppc604_cpu", "ppc750_cpu",
    "ppc7400_cpu", "ppc7410_cpu", "adjust_time",
    "gdb",      # molpy's GDB stub port (docs/gdb.md)
})

# MOL's keys for what molpy does not serve, by what they are about
GROUPS: dict[str, frozenset[str]] = {
    "video": frozenset({
        "resolution", "depth", "enable_xvideo", "enable_console_video", "start_on_console",
        "autoswitch_console", "enable_xdga_video", "enable_vncvideo", "vnc_port", "fbdev_prefs",
        "use_fb_cache", "osi_video_driver", "bootlogo", "mdialog", "no_video", "vt", "fb_modes"}),
    "sound": frozenset({
        "sound.driver", "startboing.enabled", "startboing.file", "sound_device", "startboing_file",
        "play_startboing", "osi_sound_driver", "oss.device"}),
    "mouse and keyboard": frozenset({
        "mouse_protocol", "mouse_dpi", "use_x_cursor", "keyboard_id", "kbd_prefs", "xkbd_prefs",
        "vnckbd_prefs", "remap_key", "remap_xkey", "remap_vnckey"}),
    "network": frozenset({"netdev", "tunconfig", "osi_enet_driver"}),
    "SCSI, USB and PCI devices": frozenset({
        "generic_scsi_for_cds", "autoprobe_scsi", "scsi_dev", "enable_usb", "osi_scsi_driver",
        "enable_pciproxy", "pci_proxy_device", "floppy1", "floppy2"}),
    "debugger": frozenset({
        "debug", "debug_stop", "no_moldeb", "via_verbose", "export_symfile", "symfile", "molsyms",
        "allow_kver_mismatch"}),
    "log, lock and pty files": frozenset({"logfile", "lockfile", "pty_link", "detach_tty"}),
    "Mac OS drivers, ROM and boot options": frozenset({
        "drv", "dbin", "drv_postfix", "osi_misc_driver", "osi_blk_driver", "osi_tty_driver",
        "newworld_rom", "rom_image", "bootx_image", "_of_interface",
        "elf_image", "kernel", "mbflags", "mount_mol_disk", "cdboot", "altconfig", "config", "cmdline",
        "load_only", "zap_nvram", "autoboot", "disable_altivec", "processor", "drivers"}),
    "user access": frozenset({"allow", "deny"}),
}
_GROUP_OF = {key: name for name, keys in GROUPS.items() for key in keys}
MAX_LISTED = 8


def unused(config: Config) -> dict[str, list[str]]:
    """Group name (or "" for keys no group knows) -> the unused keys, in definition order.

    A key is used when molpy serves it, when it is predefined, or when some ``${key}``
    read it (a variable)."""
    groups: dict[str, list[str]] = {}
    for key, ds in config.defs.items():
        if key in SERVED or key in config.referenced or all(d.origin == PREDEFINED for d in ds):
            continue
        groups.setdefault(_GROUP_OF.get(key, ""), []).append(key)
    return groups


def _listing(names: list[str]) -> str:
    shown = ", ".join(names[:MAX_LISTED])
    return shown + (f" ... ({len(names)} keys)" if len(names) > MAX_LISTED else "")


def unused_lines(config: Config) -> list[str]:
    """One line per group of keys molpy does not use."""
    lines = []
    for group, keys in unused(config).items():
        if group:
            lines.append(f"not served by molpy ({group}): {_listing(keys)}")
        else:
            located = [key if config.defs[key][0].origin == CMDLINE
                       else f"{key} ({config.defs[key][0].where})" for key in keys]
            lines.append(f"keys molpy does not know (ignored): {_listing(located)}")
    return lines


def warn_unused(config: Config, warn: Callable[[str], None]) -> None:
    for line in unused_lines(config):
        warn(line)
