"""The console device's session state (CONS chunk): keys, log line and the guest's current line."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from molpy.console import BufferConsole
from molpy.drivers.console import KEYS_MAX, LOG_LINE_MAX, TTY_LINE_MAX, ConsoleDevice, parse_state
from molpy.machine import Machine, Stop


def test_the_current_line_survives_save_and_resume():
    m = Machine(frontend=BufferConsole(b"echo one\nech"))
    try:
        m.boot()
        assert m.run(seconds=1) is Stop.TIMEOUT
        cons = next(d for d in m.devices if d.kind == "CONS")
        assert bytes(cons.tty_line) == b"molpy> ech"      # the demo guest echoes what it reads
        state = cons.save_state()
    finally:
        m.close()
    m = Machine(frontend=BufferConsole())
    try:
        cons = ConsoleDevice.restore(m.device_context, ConsoleDevice.read_state(state, ConsoleDevice.version))
        cons.redraw()
        assert bytes(m.frontend.output) == b"molpy> ech"
    finally:
        m.close()


def test_version_1_states_still_load():
    keys, log = b"ab\n", b"partial log"
    assert parse_state(len(keys).to_bytes(4, "big") + keys + log, 1) == (keys, log, b"")


@settings(max_examples=300)
@given(st.binary(max_size=64), st.binary(max_size=64), st.binary(max_size=64))
def test_round_trip(keys, log, tty):
    data = b"".join(len(p).to_bytes(4, "big") + p for p in (keys, log, tty))
    assert parse_state(data, 2) == (keys, log, tty)


@settings(max_examples=500)
@given(st.one_of(st.binary(max_size=80),
                 st.builds(lambda n, body: n.to_bytes(4, "big") + body,
                           st.integers(0, 2**32 - 1), st.binary(max_size=40))), st.sampled_from([1, 2]))
def test_crafted_states_are_refused_or_bounded(data, version):
    try:
        keys, log, tty = parse_state(data, version)
    except ValueError:
        return
    assert len(keys) <= KEYS_MAX and len(log) <= LOG_LINE_MAX and len(tty) <= TTY_LINE_MAX


def test_the_line_kept_is_bounded():
    m = Machine(frontend=BufferConsole())
    try:
        cons = ConsoleDevice(m.device_context)
        for _ in range(3 * TTY_LINE_MAX):
            cons.tty_putc(ord("x"))
        assert len(cons.tty_line) == TTY_LINE_MAX
        cons.tty_putc(ord("\n"))
        assert cons.tty_line == bytearray()
    finally:
        m.close()
