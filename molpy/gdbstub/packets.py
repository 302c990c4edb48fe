"""The remote serial protocol's framing: ``$data#cs`` packets, acks, escapes, Ctrl-C.

A ``PacketReader`` is fed whatever the socket gives and yields complete events; it never
holds more than ``MAX_PACKET`` bytes of one packet (gdb is told this size in qSupported),
so a client sending garbage cannot make the stub grow without bound.
"""

from __future__ import annotations

MAX_PACKET = 16384
INTERRUPT = b"\x03"


def checksum(data: bytes) -> int:
    return sum(data) & 0xFF


def escape(data: bytes) -> bytes:
    """Binary payload escapes: ``}`` then the byte XOR 0x20 for ``#$}*``."""
    out = bytearray()
    for b in data:
        if b in (0x23, 0x24, 0x7D, 0x2A):
            out += bytes((0x7D, b ^ 0x20))
        else:
            out.append(b)
    return bytes(out)


def unescape(data: bytes) -> bytes:
    out = bytearray()
    it = iter(data)
    for b in it:
        if b == 0x7D:
            nxt = next(it, None)
            if nxt is None:
                raise ValueError("escape at the end of a packet")
            out.append(nxt ^ 0x20)
        else:
            out.append(b)
    return bytes(out)


def expand_rle(data: bytes) -> bytes:
    """Run-length encoding (``X*n``): gdb does not send it, but the protocol allows it."""
    if b"*" not in data:
        return data
    out = bytearray()
    i = 0
    while i < len(data):
        if data[i] == 0x2A and out and i + 1 < len(data):
            out += out[-1:] * (data[i + 1] - 29)
            i += 2
        else:
            out.append(data[i])
            i += 1
    return bytes(out)


def frame(data: bytes) -> bytes:
    return b"$" + data + b"#" + b"%02x" % checksum(data)


class PacketReader:
    """Turns a byte stream into events: ("packet", bytes), ("interrupt", None), ("ack", bool),
    ("bad", None) for a packet whose checksum failed (the caller sends '-')."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._in_packet = False
        self._cs: bytearray | None = None

    def feed(self, data: bytes) -> list[tuple[str, bytes | bool | None]]:
        events: list[tuple[str, bytes | bool | None]] = []
        for b in data:
            if self._cs is not None:
                self._cs.append(b)
                if len(self._cs) == 2:
                    try:
                        ok = int(self._cs, 16) == checksum(self._buf)
                    except ValueError:
                        ok = False
                    events.append(("packet", bytes(self._buf)) if ok else ("bad", None))
                    self._buf.clear()
                    self._cs = None
                    self._in_packet = False
            elif self._in_packet:
                if b == 0x23:
                    self._cs = bytearray()
                elif len(self._buf) >= MAX_PACKET:
                    self._buf.clear()        # too long: drop it, wait for the next '$'
                    self._in_packet = False
                    events.append(("bad", None))
                else:
                    self._buf.append(b)
            elif b == 0x24:
                self._in_packet = True
            elif b == 0x03:
                events.append(("interrupt", None))
            elif b in (0x2B, 0x2D):
                events.append(("ack", b == 0x2B))
        return events


def hex_u32(value: int) -> bytes:
    return b"%08x" % (value & 0xFFFFFFFF)


def parse_hex(text: bytes, what: str, bits: int = 32) -> int:
    """A hex number from a packet, bounded; ValueError names it."""
    if not text or len(text) > (bits + 3) // 4 + 1:
        raise ValueError(f"bad {what}")
    try:
        value = int(text, 16)
    except ValueError:
        raise ValueError(f"bad {what}") from None
    if value < 0 or value >= 1 << bits:
        raise ValueError(f"{what} out of range")
    return value
