"""The OSI keyboard queue (50/51) fed from the console, as MOL's kbd.c answers."""

from __future__ import annotations

from guestout import run_to_exit
from molpy.boot import bundled_guest
from molpy.console import BufferConsole
from molpy.drivers.keyboard import Keyboard, key_events
from molpy.machine import Machine, MachineConfig


def run_kbd(keys: bytes) -> list[str]:
    return run_to_exit(MachineConfig(ram_mib=16, bootfile=str(bundled_guest("kbd"))), keys)[1].splitlines()


def test_keys_become_adb_events_once_activated():
    out = run_kbd(b"t" + b"aA\x03\x7f\r" + b"\xe9" + b"q" + b"z")
    assert out[0] == "before -1"                 # inactive: -1, the key stays for the TTY
    assert out[1] == "tty 74"
    assert out[2] == "activate 0"
    events = [line.split()[1] for line in out if line.startswith("k ")]
    assert events == ["00", "80",                        # a
                      "38", "00", "80", "b8",            # shift a
                      "36", "08", "88", "b6",            # control c
                      "33", "b3",                        # delete
                      "24", "a4",                        # return
                      "0c", "8c"]                        # q (0xe9 has no key: dropped)
    assert all(line.split()[2] == "0" for line in out if line.startswith("k "))   # no raw code
    assert "other 0" in out and "suspend 0" in out
    assert out[-1] == "tty 7a"                   # suspended: keys are the TTY's again


def test_us_layout():
    assert key_events(ord("1")) == [0x12, 0x92]
    assert key_events(ord("!")) == [0x38, 0x12, 0x92, 0xB8]
    assert key_events(ord("~")) == [0x38, 0x32, 0xB2, 0xB8]
    assert key_events(ord(" ")) == [0x31, 0xB1]
    assert key_events(0x1B) == [0x35, 0xB5]
    assert key_events(0x80) == [] and key_events(0) == []


def test_queue_state_in_a_session():
    m = Machine(MachineConfig(ram_mib=16), BufferConsole(b"ab"))
    kb = next(d for d in m.devices if d.kind == "KEYB")
    kb.cntrl(1)
    assert kb.get_key() == (0x00, 0)
    state = kb.save_state()
    assert kb.verify_state(state, 1) == []
    kb.get_key()
    kb = Keyboard.restore(m.device_context, Keyboard.read_state(state, 1))
    assert kb.get_key() == (0x80, 0) and kb.active
    assert kb.verify_state(b"\x05\x00\x00", 1) and kb.verify_state(state + b"x", 1)
    m.close()
