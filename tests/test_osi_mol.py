"""OSI calls answered as MOL answers them (os_interface.c, booter.c, tty.c, video.c),
checked from a guest: the probe guest makes each call with chosen registers."""

from __future__ import annotations

import time

import pytest

from guestout import run_to_exit
from molpy.boot import bundled_guest
from molpy.machine import MachineConfig
from molpy.osi import OSI_MAGIC1, OSI_MAGIC2
from probe import SCRATCH, Probe, signed

EXIT_MAGIC = 0x45584954


def run_exit(r6: int, r7: int) -> int:
    p = Probe()
    p.run(extra=f"c 54 {r6} {r7} 0 0 0 0")
    return p.machine.exit_code


@pytest.mark.parametrize("r6, r7, status", [
    (7, EXIT_MAGIC, 7),                 # molpy's extension: 'EXIT' in r7 makes r6 the status
    (7, 0, 0),                          # MOL's EXIT takes no argument: a stale r6 is not a status
    (232, 0x45584955, 0),               # anything but the exact magic
    (0xFFFFFFFF, EXIT_MAGIC, -1),
])
def test_exit_status_comes_from_r6_only_with_the_magic(r6, r7, status):
    assert run_exit(r6, r7) == status


def test_q_exits_zero_like_a_mol_guest():
    p = Probe()
    p.call(7)
    p.run()
    assert p.machine.exit_code == 0


def test_bundled_guests_pass_their_status_with_the_magic(tmp_path):
    assert run_to_exit(MachineConfig(ram_mib=16, bootfile=str(bundled_guest("osi_calls")), boot_args="42"),
                       b"a\n")[0] == 42


def test_unknown_selectors_answer_as_mol(caplog):
    p = Probe()
    for sel in (2, 95, 100, 200, 0x80000000, 0xFFFFFFFF, 95):
        p.call(sel, 5, 6)
    answers = p.run()
    # below 100: MOL's unset vector returns 0 (r4.. as the guest left them)
    assert answers[0][:2] == (0, OSI_MAGIC2) and answers[1][0] == 0 and answers[6][0] == 0
    # from 100 up (unsigned, so "negative" selectors too): r3 keeps the magic
    for a in answers[2:6]:
        assert a[0] == OSI_MAGIC1
    logged = [r.getMessage() for r in caplog.records if "unknown OSI selector" in r.getMessage()]
    assert len(logged) == 6                          # once per selector: 95 twice, logged once


def test_call_available_and_the_selectors_mol_serves():
    p = Probe()
    served = [0, 1, 7, 9, 32, 47, 50, 51, 52, 53, 54, 58, 78, 91, 92, 93, 96, 97, 98, 99]
    for sel in served + [2, 76, 77, 100]:
        p.call(0, sel)
    answers = p.run()
    assert [a[0] for a in answers] == [1] * len(served) + [0, 0, 0, 0]


def test_debugger_break_logs_and_goes_on(caplog):
    p = Probe()
    p.call(1, 0xFFFFFFFE)
    p.call(7)
    answers = p.run()
    assert answers[0][0] == 0 and abs(answers[1][0] - time.time()) < 5
    assert any("osi user break [-2]" in r.getMessage() for r in caplog.records)


def test_local_time_is_seconds_since_1904_with_the_zone():
    p = Probe(resources={"adjust_time": [["2"]]})
    p.call(9)
    p.call(7)
    local, gmt = (a[0] for a in p.run())
    now = int(time.time())
    dst = 3600 if time.localtime(now).tm_isdst > 0 else 0
    expected = now + 2 * 3600 + 0x7C25B080 - time.timezone + dst
    assert abs(local - expected) <= 2
    assert abs(gmt - now) <= 2                       # GMT ignores adjust_time, as in MOL


def test_fb_info_without_a_framebuffer():
    """video.c's get_video_info with no video: 1, and zero address/rowbytes/size/depth."""
    p = Probe()
    p.call(32, 11, 12, 13, 14, 15, 16)
    assert p.run()[0] == (1, 0, 0, 0, 0, 0)


def test_tty_putc_returns_one_and_irq_ack_zero():
    p = Probe()
    p.call(97, 0x10A)                               # the low byte goes out: a newline
    p.call(99)
    a = p.run()
    assert a[0][0] == 1 and a[1][0] == 0
    assert "\n\n= 1 " in bytes(p.machine.frontend.output).decode()


# -- BOOT_HELPER (78) --

def test_boot_helper_ram_size_and_unknown_ops():
    p = Probe(ram_mib=32)
    p.call(78, 35)
    p.call(78, 36)
    p.call(78, 31)
    a = p.run()
    assert a[0][0] == 32 << 20 and signed(a[1][0]) == -1 and signed(a[2][0]) == -1


def test_get_str_res_copies_like_strncpy0_and_answers_the_buffer():
    res = {"macos_rompath": [["System Folder/Mac OS ROM"]],
           "macos_rompath_": [["a/b", "second"], ["c/d"]]}
    p = Probe(resources=res)
    key, buf = SCRATCH, SCRATCH + 0x100
    p.store(buf, b"\xaa" * 40)
    p.store(key, "macos_rompath")
    p.call(78, 34, key, buf, 64, 0, 0)              # found: returns buf
    p.dump(buf, 26)
    p.store(buf, b"\xaa" * 8)
    p.call(78, 34, key, buf, 5, 0, 0)               # at most size-1 bytes and a NUL
    p.dump(buf, 6)
    p.store(key + 32, "macos_rompath_")
    p.call(78, 34, key + 32, buf, 64, 1, 0)         # second definition
    p.dump(buf, 4)
    p.call(78, 34, key + 32, buf, 64, 0, 1)         # second word
    p.call(78, 34, key + 32, buf, 64, 2, 0)         # no third definition: 0, never -1
    p.call(78, 34, key + 32, buf, 64, 0, 2)         # no third word
    p.call(78, 34, key + 32, buf, 64, 0, 0xFFFFFFFF)  # negative word number reads word 0 (MOL)
    p.store(key + 64, "nothing")
    p.call(78, 34, key + 64, buf, 64, 0, 0)         # absent key: 0
    p.store(buf, b"\xbb\xbb")
    p.call(78, 34, key, 1, 0, 0, 0)                 # BootHResPresent: buf 1, size 0 -> 1
    p.call(78, 34, key, 0, 64, 0, 0)                # buffer 0: nothing copied, answer 0
    a = p.run()
    assert a[0][0] == buf and a[1] == b"System Folder/Mac OS ROM\0\xaa"
    assert a[2][0] == buf and a[3] == b"Syst\0\xaa"
    assert a[4][0] == buf and a[5] == b"c/d\0"
    assert a[6][0] == buf
    assert a[7][0] == 0 and a[8][0] == 0
    assert a[9][0] == buf
    assert a[10][0] == 0
    assert a[11][0] == 1
    assert a[12][0] == 0


def test_get_str_res_with_bad_addresses_answers_zero():
    res = {"k": [["value"]]}
    ram = 16 << 20
    p = Probe(resources=res)
    p.store(SCRATCH, "k")
    p.store(ram - 2, "k")                           # "k\0" in the last two bytes of RAM
    p.call(78, 34, ram, SCRATCH + 16, 64, 0, 0)     # key outside RAM
    p.call(78, 34, SCRATCH, ram + 16, 64, 0, 0)     # buffer outside RAM
    p.call(78, 34, SCRATCH, ram - 3, 64, 0, 0)      # the copy would leave RAM
    p.call(78, 34, ram - 2, SCRATCH + 16, 64, 0, 0)  # a key at the very end still works
    a = p.run()
    assert [x[0] for x in a] == [0, 0, 0, SCRATCH + 16]


def test_ascii_and_unicode_conversions():
    p = Probe()
    src, dst = SCRATCH, SCRATCH + 0x100
    p.store(src, "Mac OS")
    p.store(dst, b"\xee" * 16)
    p.call(78, 32, dst, src, 64)                    # -> 6, "M" as 00 4d ...
    p.dump(dst, 16)
    p.store(dst, b"\xee" * 8)
    p.call(78, 32, dst, src, 3)                     # maxlen 3: two characters and a 0 unit
    p.dump(dst, 8)
    p.call(78, 32, dst, src, 0)                     # maxlen 0: nothing
    p.store(src, bytes.fromhex("0041 0000 0142 0043 0044 0045"))
    p.store(dst, b"\xee" * 8)
    p.call(78, 33, dst, src, 6, 64)                 # 0 and non-Latin-1 units are skipped
    p.dump(dst, 5)
    p.store(dst, b"\xee" * 8)
    p.call(78, 33, dst, src, 6, 3)                  # at most maxlen-1 characters
    p.dump(dst, 4)
    p.call(78, 33, dst, src, 6, 0xFFFFFFFF)         # negative maxlen: 0
    p.call(78, 32, (16 << 20) + 4, src, 8)          # outside RAM: -1
    a = p.run()
    assert a[0][0] == 6 and a[1] == bytes.fromhex("004d 0061 0063 0020 004f 0053 0000") + b"\xee\xee"
    assert a[2][0] == 2 and a[3] == bytes.fromhex("004d 0061 0000") + b"\xee\xee"
    assert a[4][0] == 0
    assert a[5][0] == 4 and a[6] == b"ACDE\0"
    assert a[7][0] == 2 and a[8] == b"AC\0\xee"
    assert a[9][0] == 0
    assert signed(a[10][0]) == -1
