"""The machine: CPU, RAM, OSI dispatch and devices, and the loop that runs the guest.

The guest runs in slices (``emu_start`` ended by molpy's slice timer, no per-instruction
hook) so that keys, Ctrl-C and F12 are seen within a slice even while it computes without
any OSI call. An exception stops the engine at the instruction that raised it and is
delivered before the next slice (molpy/exceptions.py); the decrementer and external
interrupts are taken between slices; everything that stops the guest is decided there.
"""

from __future__ import annotations

import ctypes
import dataclasses
import enum
import logging
import os
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from unicorn import UC_PROT_ALL, UcError
from unicorn import unicorn_const as UC

from . import boot
from .console import BufferConsole, Frontend
from .cpu import SCRATCH_BASE, SCRATCH_SIZE, Cpu, CpuState, uclib
from .cpuenv import CpuEnv
from .drivers.device import DeviceContext
from .drivers.registry import create_devices, restore_devices
from .emulation.memory import GuestMemory
from .emulation.session import SessionError, SessionUsed, open_session
from .emulation.session_write import write_session
from .emulation.state import StateError
from .exceptions import ExceptionUnit
from .fault import GuestFault, instruction_at
from .osi import OsiDispatcher
from .restore import check_fits
from .slicetimer import SliceTimer
from .timebase import STATE_KEY as TIMEBASE_KEY
from .timebase import TimeBase, parse_state
from .timeregs import TimeRegisters

if TYPE_CHECKING:  # pragma: no cover
    from .drivers.disks import DiskSpec

SLICE_US = 10_000                       # 10 ms: keys are seen well within 100 ms
# A booted guest's time base starts at 0 and its decrementer at 0xFFFFFFFF: it passes
# zero after 2^32 ticks (172 s) unless the guest writes it first.
FRESH_TIMEBASE = {"tb": 0, "dec": 0xFFFFFFFF, "dec_pending": False}
# emu_start's end address: unaligned, so no instruction fetch ever matches it, at any
# virtual address a guest's MMU may map.
UNTIL = SCRATCH_BASE + SCRATCH_SIZE - 2

log = logging.getLogger("molpy")

# uc_emu_start through our own handle on the library: the binding's wrapper costs ~4 us a
# call, paid once per delivered exception. Guest slices end through molpy's SliceTimer,
# never through Unicorn's timeout (see molpy/slicetimer.py).
_emu_start = uclib.uc_emu_start
_emu_start.argtypes = [ctypes.c_void_p, ctypes.c_uint64, ctypes.c_uint64, ctypes.c_uint64, ctypes.c_size_t]


class Stop(enum.Enum):
    EXIT = "exit"            # the guest called OSI EXIT; see Machine.exit_code
    FAULT = "fault"          # see Machine.fault
    QUIT = "quit"            # Ctrl-] on the terminal, or the output went away
    SAVE = "save"            # F12: the caller saves the session
    INTERRUPT = "interrupt"  # Ctrl-C or SIGTERM
    TIMEOUT = "timeout"      # run(seconds=...) used its time
    DEBUG = "debug"          # the debugger asked for a stop (request_debug_stop), or run(step=True) stepped


# Settings a resume does not take from the molrc, or checks by itself: the session's RAM
# wins, boot settings are not used (the guest runs), disks are checked by their markers,
# and the recipe itself switches session_readonly and -cow. Any other change is noted.
RESUME_IGNORES = frozenset({"session_file", "session_readonly", "blkdev", "ram_size", "bootfile",
                            "boot_args", "cow_dir"})
CHECKSUM_TAG = "r1:"     # checksums of these settings; older sessions stored another kind


def resume_checksum(config) -> str:
    """What a session records of the settings it ran with (64 characters: its header's field)."""
    return CHECKSUM_TAG + config.checksum(RESUME_IGNORES)[:64 - len(CHECKSUM_TAG)]


@dataclass
class MachineConfig:
    """What the machine needs from a molrc, already checked."""

    ram_mib: int = 64
    bootfile: str | None = None
    boot_args: str = ""
    cpu: str | None = None
    blkdevs: "list[DiskSpec]" = field(default_factory=list)
    cow_dir: str | None = None
    session_file: str | None = None
    session_readonly: bool = False
    config_checksum: str = ""
    inspect_only: bool = False      # open disks read-only, make no overlays (session verify)
    of_image: str | None = None     # firmware ELF to boot instead of bootfile (MOL key of_image)
    oftree: str | None = None       # device tree file in MOL's text format (MOL key oftree)
    nvram: str | None = None        # NVRAM image file (MOL key nvram)
    pseudofiles: list[tuple[str, str]] = field(default_factory=list)   # (name, host path), MOL's naming
    boot_type: str | None = None    # MOL's boot_method (by default its boot_type): newworld, osx ...
    session_id: int | None = None   # MOL's session number (it does not name the session file)
    resources: dict[str, list[list[str]]] = field(default_factory=dict)  # key -> words of each definition
    kernel: str | None = None       # a Linux vmlinux (docs/linux.md); "linux" = molpy linux build's
    initrd: str | None = None
    dtb: str | None = None          # a flattened device tree instead of the generated one

    @classmethod
    def from_config(cls, config) -> "MachineConfig":
        """Read the keys molpy uses from a :class:`molpy.config.Config` (errors name FILE:LINE)."""
        from .molrc import values

        return cls(ram_mib=values.ram_mib(config), bootfile=config.get_path("bootfile"),
                   boot_args=config.get("boot_args", "") or "", cpu=values.cpu_name(config),
                   blkdevs=list(config.blkdevs), cow_dir=config.get_path("cow_dir"),
                   session_file=config.get_path("session_file"),
                   session_readonly=config.get_bool("session_readonly", False),
                   config_checksum=resume_checksum(config), of_image=config.get_path("of_image"),
                   oftree=config.get_path("oftree"), nvram=config.get_path("nvram"),
                   pseudofiles=values.pseudofiles(config), boot_type=values.boot_method(config),
                   session_id=values.session_number(config), resources=config.resources,
                   kernel=config.get("kernel") if config.get("kernel") == "linux" else config.get_path("kernel"),
                   initrd=config.get_path("initrd"), dtb=config.get_path("dtb"))


class Machine:
    """One guest machine. Build it, ``boot()`` it (or resume a session), then ``run()``."""

    def __init__(self, config: MachineConfig | None = None, frontend: Frontend | None = None,
                 *, memory: GuestMemory | None = None,
                 restored: dict[tuple[str, int], Any] | None = None) -> None:
        self.config = config or MachineConfig()
        self.frontend = frontend if frontend is not None else BufferConsole()
        self.cpu = Cpu(self.config.cpu)
        self.memory = memory if memory is not None else GuestMemory(self.config.ram_mib << 20)
        self.cpu.uc.mem_map_ptr(0, self.memory.size, UC_PROT_ALL, self.memory.address)
        self.exit_code: int | None = None
        self.fault: GuestFault | None = None
        self._saved_state: CpuState | None = None
        self.saved = False                  # a session was saved from this machine
        self._error: BaseException | None = None
        self.debug_stop = False             # set by request_debug_stop (any thread, or a hook)
        self._session = None                # the open session file a resumed machine runs from
        self.slice_us = SLICE_US
        self.cpuenv = CpuEnv(self.cpu)
        self.timebase = TimeBase()
        self._timer = SliceTimer(self.cpu.uch)
        self.timeregs = TimeRegisters(self.cpu, self.cpuenv, self.timebase, self._on_dec_write, self._on_error)
        self.exceptions = ExceptionUnit(self.cpu, self.cpuenv, self.memory.view, self.timebase)
        self._saved_time: dict | None = None
        self.osi = OsiDispatcher(self.cpu, self.exceptions.on_interrupt, self._on_error)
        self.timebase.register_osi(self.osi)
        self.device_context = DeviceContext(
            config=self.config, memory=self.memory, osi=self.osi, frontend=self.frontend,
            code_changed=self.cpu.code_changed, request_exit=self.request_exit,
            protected_files=self._protected_files, end_slice=self._end_slice)
        # restored: the device records phase one of a resume checked (Machine.from_session)
        self.devices = create_devices(self.device_context) if restored is None \
            else restore_devices(self.device_context, restored)

    def _protected_files(self) -> dict[tuple[int, int], str]:
        """The files this machine has open that nothing molpy writes may be (by device and
        inode): every disk, every -cow overlay, the session it runs from."""
        found: dict[tuple[int, int], str] = {}
        opened = [(fd, what) for dev in getattr(self, "devices", []) for fd, what in dev.open_files()]
        if self._session is not None:
            opened.append((self._session.fd, f"the session file {self.config.session_file}"))
        for fd, what in opened:
            try:
                st = os.fstat(fd)
            except OSError:
                continue
            found.setdefault((st.st_dev, st.st_ino), what)
        return found

    # -- boot --

    def boot(self, bootfile: str | None = None, boot_args: str | None = None) -> None:
        """Load the guest ELF and set the entry registers (a fresh start).

        What boots: ``bootfile`` given here, else molpy's ``bootfile`` key, else MOL's
        firmware (``of_image``, as MOL's newworld boot did), else the bundled demo guest."""
        args = self.config.boot_args if boot_args is None else boot_args
        if self.config.kernel and not bootfile:
            state = self._boot_linux(args)
            self.set_state(state, FRESH_TIMEBASE)
            return
        path = bootfile or self.config.bootfile or self.config.of_image or str(boot.demo_guest())
        state = boot.load(self.memory, path, args)
        self.set_state(state, FRESH_TIMEBASE)

    def _boot_linux(self, args: str) -> CpuState:
        """A Linux kernel: without boot_args, console on hvc0 and root on the -boot disk."""
        from .linux import boot as linux_boot

        if not args:
            unit = 0
            for dev in self.devices:
                for i, u in enumerate(dev.units):
                    if u.flags & 8:          # the boot hint
                        unit = i
                        break
            args = f"console=hvc0 root=/dev/mblk{unit} rw"
        kernel = linux_boot.resolve_kernel(self.config.kernel)
        return linux_boot.load_kernel(self.memory, kernel, args, cpu=self.config.cpu,
                                      initrd=self.config.initrd, dtb=self.config.dtb)

    # -- called from the interrupt hook --

    def request_exit(self, code: int) -> None:
        self.exit_code = code
        self.cpu.stop()

    def _on_error(self, exc: BaseException) -> None:
        if self._error is None:
            self._error = exc
        self.cpu.stop()

    def _end_slice(self) -> None:
        """From an OSI call (USLEEP): the slice ends when the call returns, so the slice
        timer has nothing to stop (it would retry its stop every 200 us while the host sleeps)."""
        self.cpu.stop()
        self._timer.disarm()

    def _on_dec_write(self) -> None:
        """The guest wrote DEC inside a slice: end the slice in time for its next exception."""
        tb = self.timebase
        self._timer.hurry(tb.clock() if tb.dec_pending else tb.next_crossing())

    def request_debug_stop(self) -> None:
        """Make ``run`` return Stop.DEBUG soon: now from a hook, within microseconds from a thread.

        The stop is sent the way the slice timer sends its own (never into the SPR stub);
        the run loop sees the request between slices, before any exception is delivered."""
        self.debug_stop = True
        self._timer.urge()

    def clear_debug_stop(self) -> None:
        """Forget a debugger's stop request made while the guest was not running."""
        self.debug_stop = False
        self._timer.calm()

    # -- the run loop --

    def run(self, seconds: float | None = None, *, step: bool = False) -> Stop:
        """Run the guest until it exits, faults, or the front-end or the time budget stops it.

        ``step``: run one instruction (an exception it raises is delivered) and return
        Stop.DEBUG, as a debugger's single step. A decrementer or external interrupt that is
        due waits for the next run without ``step`` (QEMU's gdb stub holds them the same way):
        a step lands on the next instruction, not in a handler the user did not ask for."""
        frontend = self.frontend
        exceptions, timeregs, timer = self.exceptions, self.timeregs, self._timer
        deadline = None if seconds is None else time.monotonic() + seconds
        poll_at = time.monotonic_ns() + self.slice_us * 1000
        while True:
            if self.debug_stop:
                self.debug_stop = False
                timer.calm()
                return Stop.DEBUG
            now = time.monotonic_ns()
            if now >= poll_at:                   # a slice's worth of time: look at the host
                frontend.flush()
                if self.memory.file_changed():
                    log.warning("the session file was opened for writing by another program; the "
                                "running guest's RAM now lives in memory only (it is unchanged)")
                frontend.poll()
                request = frontend.take_request()
                if request is not None:
                    return Stop(request)
                if deadline is not None and time.monotonic() >= deadline:
                    return Stop.TIMEOUT
                timeregs.sync(self.cpuenv.load(), now)
                self.cpuenv.store()
                poll_at = now + self.slice_us * 1000
            if step:
                # A debugger's step: asynchronous interrupts are held, and no slice timer
                # runs (a stop that landed before the one instruction would lose the step).
                fault = None
                err = _emu_start(self.cpu.uch, self.cpu.pc, UNTIL, 0, 1)
            else:
                fault, event = exceptions.before_slice(now)
                if fault is None:
                    timer.arm(poll_at if event is None else min(poll_at, event))
                    try:
                        err = _emu_start(self.cpu.uch, self.cpu.pc, UNTIL, 0, 0)
                    finally:
                        timer.disarm()
            if fault is None:
                if err:
                    self._fault_from_error(UcError(err))
                if self._error is not None:
                    error, self._error = self._error, None
                    frontend.flush()
                    raise error
                if self.fault is None and self.exit_code is None and exceptions.raised is not None:
                    fault = exceptions.deliver_raised()
            if fault is not None:
                self.fault = fault
            if self.fault is not None:
                frontend.flush()
                self._complete_fault()
                return Stop.FAULT
            if self.exit_code is not None:
                frontend.flush()
                return Stop.EXIT
            if step and fault is None:
                self.debug_stop = False
                timer.calm()
                return Stop.DEBUG

    def _fault_from_error(self, e: UcError) -> None:
        if self.fault is not None:
            return
        kinds = {
            UC.UC_ERR_READ_UNMAPPED: "read outside RAM", UC.UC_ERR_WRITE_UNMAPPED: "write outside RAM",
            UC.UC_ERR_FETCH_UNMAPPED: "instruction fetch outside RAM",
            UC.UC_ERR_READ_PROT: "read outside RAM", UC.UC_ERR_WRITE_PROT: "write outside RAM",
            UC.UC_ERR_FETCH_PROT: "instruction fetch outside RAM",
            UC.UC_ERR_INSN_INVALID: "illegal instruction",
            UC.UC_ERR_READ_UNALIGNED: "unaligned read", UC.UC_ERR_WRITE_UNALIGNED: "unaligned write",
        }
        pc = self.cpu.pc
        self.fault = GuestFault(kind=kinds.get(e.errno, "emulation error"), pc=pc,
                                detail=f"unicorn: {e}")

    def _complete_fault(self) -> None:
        """Registers and instruction as the fault left them (the MMU's view of pc included)."""
        f = self.fault
        try:
            f.state = self.get_state()
        except Exception:  # the report is still useful without the registers
            f.state = None
        if f.state is not None:
            f.state.pc = f.pc
            if f.insn is None:
                f.insn, f.insn_note = instruction_at(f.state, self.memory.view, f.pc)

    # -- state --

    def get_state(self) -> CpuState:
        """Every register; TB and DEC as the guest reads them now."""
        state = self.cpu.get_state()
        now = self.timebase.clock()
        tb = self.timebase.tb(now)
        state.spr["TBL"], state.spr["TBU"] = tb & 0xFFFFFFFF, tb >> 32
        state.spr["DEC"] = self.timebase.dec(now)
        return state

    def pause_time(self) -> dict:
        """Guest time at a debugger's stop (DEC/TB writes taken in); ``resume_time`` goes on from it,
        so time spent stopped in gdb does not pass for the guest (a step does not land in a
        decrementer interrupt that came due while the user looked)."""
        now = self.timebase.clock()
        env = self.cpuenv.load()
        self.timeregs.sync(env, now)
        env.store()
        return self.timebase.save(now)

    def resume_time(self, saved: dict) -> None:
        now = self.timebase.clock()
        self.timebase.load(saved, now)
        env = self.cpuenv.load()
        self.timeregs.sync(env, now, adopt=True)
        env.store()

    def set_state(self, state: CpuState, timebase: dict | None = None) -> None:
        """Load every register; TB and DEC go on from the state's values (or ``timebase``)."""
        self.cpu.set_state(state)
        tb = timebase or {"tb": state.spr["TBU"] << 32 | state.spr["TBL"], "dec": state.spr["DEC"],
                          "dec_pending": False}
        now = self.timebase.clock()
        self.timebase.load(tb, now)
        env = self.cpuenv.load()
        self.timeregs.sync(env, now, adopt=True)
        env.store()

    # -- sessions --

    def save_session(self, path: str | None = None) -> int:
        """Save RAM, CPU and device state (between slices); returns the file's size.

        Refuses a read-only session (it is never written) and waits for no device: every
        osi_blk request completes before its OSI call returns.
        """

        path = path or self.config.session_file
        if not path:
            raise SessionError("no session_file is set in the molrc; nothing saved")
        if self.config.session_readonly and os.path.abspath(path) == os.path.abspath(
                self.config.session_file or ""):
            raise SessionError(f"session {path} is read-only (session_readonly: yes); not saved")
        self.frontend.flush()
        devices, bulks = [], []
        for dev in self.devices:
            devices.append((dev.kind, dev.instance, dev.save_later()))
            bulks += dev.save_bulk()
        cpu = self.get_state().as_dict()
        cpu[TIMEBASE_KEY] = self.timebase.save()
        return write_session(path, self.memory.view, cpu, devices, self.config.config_checksum, bulks,
                             {("CPU ", 0): CpuState.VERSION,
                              **{(dev.kind, dev.instance): dev.version for dev in self.devices}})

    @classmethod
    def from_session(cls, path: str, config: MachineConfig | None = None,
                     frontend: Frontend | None = None) -> "Machine":
        """A machine resumed from a session file: RAM mapped copy-on-write from it.

        A session that is not read-only (``config.session_readonly`` false) is locked for
        this machine's life and marked used, so it resumes once (MOL's behaviour), and
        only in one process; a read-only one is share-locked (any number of machines).
        The file stays open while the machine lives: its RAM and bulk chunks are read from
        it, and a read lease lets molpy move RAM off it if another program writes it.
        """

        config = config or MachineConfig(session_file=path, session_readonly=True)
        readonly = config.session_readonly
        session = open_session(path)
        machine = None
        try:
            session.lock(exclusive=not readonly)
            if session.used and not readonly:
                raise SessionUsed(f"session {path} was already resumed once (session_readonly: no); "
                                   f"it resumes only once")
            # the session is the machine: its RAM size wins over ram_size
            config = dataclasses.replace(config, ram_mib=session.ram_size >> 20)
            cpu_version = session.versions().get(("CPU ", 0), 0) or 1
            if not CpuState.MIN_VERSION <= cpu_version <= CpuState.VERSION:
                raise SessionError(f"session {path}: the CPU state version {cpu_version} is not supported "
                                   f"(this molpy loads versions {CpuState.MIN_VERSION} to {CpuState.VERSION})")
            cpu = session.cpu_dict()
            state = CpuState.from_dict(cpu)
            timebase = parse_state(cpu[TIMEBASE_KEY]) if TIMEBASE_KEY in cpu else None
            records = check_fits(session, config, path)      # phase one: nothing opened for writing yet
            memory = GuestMemory(session.ram_size, file_fd=session.fd, file_offset=session.ram.offset)
            try:
                machine = cls(config, frontend, memory=memory, restored=records)    # phase two
            except BaseException:
                memory.close()
                raise
            machine.load_saved(state, timebase)
            if not readonly:
                session.mark_used()
            memory.guard_file(session.fd)
            machine._session = session
            return machine
        except StateError as e:         # a check of the saved state failed: the file is to blame
            if machine is not None:
                machine.close()
            session.close()
            raise SessionError(f"session {path} is damaged ({e})") from None
        except BaseException:
            if machine is not None:
                machine.close()
            session.close()
            raise

    @property
    def config_changed(self) -> bool:
        """A resumed machine whose molrc settings (but those a resume checks itself) differ
        from the ones its session was saved with."""
        saved = self._session.config_checksum if self._session is not None else ""
        return saved.startswith(CHECKSUM_TAG) and bool(self.config.config_checksum) \
            and saved != self.config.config_checksum

    def load_saved(self, state: CpuState, timebase: dict | None = None) -> None:
        """Put the CPU in its saved state (the devices were made in theirs) and remember
        it for reset."""
        self.set_state(state, timebase)
        self._saved_time = self.timebase.save()
        self._saved_state = state
        # In-process, Unicorn's own CPU context (every SPR included) restores in microseconds;
        # it cannot go into a file (it holds pointers), which is why the session stores CpuState.
        self._saved_context = self.cpu.uc.context_save()

    def reset(self) -> None:
        """Back to the session's state in-process: RAM, CPU, devices and overlays."""
        if self._saved_state is None:
            raise RuntimeError("reset() needs a machine made by Machine.from_session()")
        if self.memory.detached:
                raise SessionError("the session file was changed by another program while this machine ran "
                               "from it; the saved state is gone, so reset() is no longer possible")
        self.memory.discard_changes()
        self.cpu.uc.ctl_flush_tb()
        self.cpu.uc.context_restore(self._saved_context)
        self.cpu.flush_tlb()
        self.timebase.load(self._saved_time)
        env = self.cpuenv.load()
        self.timeregs.sync(env, self.timebase.clock(), adopt=True)
        env.store()
        self.exceptions.reset()
        for dev in self.devices:
            dev.reset()
        self.exit_code = None
        self.fault = None

    def close(self) -> None:
        for dev in reversed(self.devices):
            dev.close()
        self.devices = []
        self._timer.close()
        self.timeregs.close()
        self.cpuenv.close()
        self.cpu.uc.mem_unmap(0, self.memory.size)
        self.memory.close()
        if self._session is not None:
            self._session.close()
            self._session = None

