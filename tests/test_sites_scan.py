"""The block scan that finds the instructions molpy handles itself (molpy/sites.py):
``find_sites`` against the model, ``classify`` of every word, in both word orders."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from molpy.sites import classify, find_sites

# site instructions (mftb, mfspr/mtspr of DEC, TB, a lower BAT) and near misses that share
# their first and last bytes (other SPRs, other extended opcodes, the Rc bit set)
_SPRS = [22, 268, 269, 284, 285, 529, 531, 543, 1, 8, 9, 272, 528, 530, 1013]
_NEAR = st.builds(lambda base, rt, spr: base | rt << 21 | (spr & 0x1F) << 16 | (spr >> 5) << 11,
                  st.sampled_from([0x7C0002E6, 0x7C0002A6, 0x7C0003A6, 0x7C0002E7, 0x7C0003A7,
                                   0x7C0000A6, 0x7C0001A6, 0x7C0002A4]),
                  st.integers(0, 31), st.sampled_from(_SPRS))
_WORDS = st.lists(st.one_of(st.integers(0, 2**32 - 1), _NEAR), max_size=64)


@settings(max_examples=800)
@given(_WORDS, st.sampled_from(["big", "little"]))
def test_find_sites_is_classify_of_every_word(words, order):
    code = b"".join(w.to_bytes(4, order) for w in words)
    model = [(4 * i, w) for i, w in enumerate(words) if classify(w)]
    assert find_sites(code, order) == model
    assert find_sites(memoryview(code), order) == model


def test_only_aligned_words_count():
    """A candidate at an offset that is not a word boundary is not an instruction; sites
    next to each other and to a candidate that is no site are all found."""
    mftb = 0x7C6C42E6                    # mftb r3
    code = (0x7C00A6E6).to_bytes(4, "big") + 2 * mftb.to_bytes(4, "big")   # (word 0: a candidate, no site)
    assert find_sites(code, "big") == [(4, mftb), (8, mftb)]
    assert find_sites(b"\x00" + code[:-1], "big") == []
