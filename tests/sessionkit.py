"""Session files as a crafter makes them: chunks replaced and checksums resealed, so that
only molpy's own checks of the state stand between the file and a resume."""

from __future__ import annotations

import struct
import zlib

ENTRY = struct.Struct(">4sIQQII")     # a chunk table entry: kind, instance, offset, length, crc, flags


def reseal(data: bytearray) -> bytes:
    n = struct.unpack_from(">I", data, 104)[0]
    struct.pack_into(">I", data, 108, zlib.crc32(data[4096:4096 + 32 * n]))
    struct.pack_into(">I", data, 4092, zlib.crc32(data[:4092]))
    return bytes(data)


def replace_chunk(good: bytes, kind: bytes, new: bytes) -> bytes:
    """The session with one small chunk's bytes replaced (moved to the end of the small
    chunks' area when it grows), checksums recomputed: what a crafted file looks like."""
    n = struct.unpack_from(">I", good, 104)[0]
    entries = [list(ENTRY.unpack_from(good, 4096 + 32 * i)) for i in range(n)]
    ram = next(e for e in entries if e[0] == b"RAM ")
    small = sorted((e for e in entries if e[0] != b"RAM " and not e[5] >> 16), key=lambda e: e[2])
    bulk = [e for e in entries if e[5] >> 16]
    pos = 4096 + 32 * n
    blob = bytearray()
    for e in small:
        body = new if e[0] == kind else good[e[2]:e[2] + e[3]]
        e[2], e[3], e[4] = pos + len(blob), len(body), zlib.crc32(body)
        blob += body
    end = pos + len(blob)
    shift = max(0, (end - (min([b[2] for b in bulk] + [ram[2]])) + 4095) // 4096 * 4096)
    out = bytearray(good[:pos]) + blob
    rest_start = min([b[2] for b in bulk] + [ram[2]])
    out += bytes(rest_start + shift - len(out))
    out += good[rest_start:]
    for e in bulk:
        e[2] += shift
    ram[2] += shift
    for i, e in enumerate(entries):
        out[4096 + 32 * i:4096 + 32 * i + 32] = ENTRY.pack(*e)
    return reseal(out)


def chunk_of(good: bytes, kind: bytes) -> bytes:
    n = struct.unpack_from(">I", good, 104)[0]
    for i in range(n):
        e = ENTRY.unpack_from(good, 4096 + 32 * i)
        if e[0] == kind:
            return good[e[2]:e[2] + e[3]]
    raise KeyError(kind)


def reseal_versions(data: bytes, versions: dict[bytes, int]) -> bytes:
    out = bytearray(data)
    n = struct.unpack_from(">I", out, 104)[0]
    for i in range(n):
        e = list(ENTRY.unpack_from(out, 4096 + 32 * i))
        if e[0] in versions:
            e[5] = (e[5] & ~0xFFFF) | versions[e[0]]
            out[4096 + 32 * i:4096 + 32 * i + 32] = ENTRY.pack(*e)
    struct.pack_into(">I", out, 108, zlib.crc32(out[4096:4096 + 32 * n]))
    struct.pack_into(">I", out, 4092, zlib.crc32(out[:4092]))
    return bytes(out)
