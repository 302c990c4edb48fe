"""Typed saved-state records (emulation/records.py) and osi_blk's, drivers/blk_state.py."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from molpy.drivers.blk_state import DiskMarker, RingState, parse_state
from molpy.emulation.records import as_doc, nullable, parse, saved
from molpy.emulation.state import StateError, boolean, u32


@dataclass
class Example:
    size: int = saved(u32)
    region: int | None = saved(nullable(u32), since=3, default=None)
    boot: bool | None = saved(nullable(boolean), may_lack=True, default=None)


def test_a_field_newer_than_the_file_takes_its_default():
    assert parse(Example, {"size": 5}, "ex", 2) == Example(5, None, None)
    assert parse(Example, {"size": 5, "region": 7}, "ex", 3) == Example(5, 7, None)


def test_a_field_of_the_files_version_is_required():
    with pytest.raises(StateError, match="ex: missing region"):
        parse(Example, {"size": 5}, "ex", 3)


def test_a_field_newer_than_the_file_is_unknown_in_it():
    with pytest.raises(StateError, match="unknown field region"):
        parse(Example, {"size": 5, "region": 7}, "ex", 2)


def test_unknown_fields_are_refused_and_retired_ones_ignored():
    with pytest.raises(StateError, match="unknown field colour"):
        parse(Example, {"size": 5, "colour": 1}, "ex", 1)
    assert parse(Example, {"size": 5, "colour": 1}, "ex", 1, retired=("colour",)) == Example(5)


def test_a_bad_value_is_named_by_label_and_field():
    with pytest.raises(StateError, match="thing size: expected a whole number"):
        parse(Example, {"size": "5"}, "ex", 1, label="thing")
    with pytest.raises(StateError, match="ex boot: expected true or false"):
        parse(Example, {"size": 5, "boot": 1}, "ex", 1)


def test_not_a_record():
    with pytest.raises(StateError, match="expected a record"):
        parse(Example, [5], "ex", 1)


def test_a_field_some_files_lack_needs_a_default():
    with pytest.raises(TypeError):
        saved(u32, since=2)


# -- osi_blk's markers: every field of a valid marker, each broken in turn (generated) --

markers = st.builds(
    DiskMarker, unit=st.just(0), path=st.text(min_size=1, max_size=40).filter(lambda s: "\0" not in s),
    size=st.integers(0, 1 << 40), inode=st.integers(0, (1 << 64) - 1),
    mtime_ns=st.integers(-(1 << 63), (1 << 63) - 1), cow=st.booleans(), readonly=st.booleans(),
    digest=st.none(), overlay=st.booleans(), region=st.none(),
    dev=st.none() | st.integers(0, (1 << 64) - 1), boot=st.none() | st.booleans())

WRONG = {"unit": "0", "path": 7, "size": -1, "inode": 1.5, "mtime_ns": 1 << 63, "cow": 1, "readonly": None,
         "digest": "f" * 63, "overlay": "yes", "region": 3, "dev": -2, "boot": "no"}


def _state(marker_doc: dict) -> bytes:
    return json.dumps({"ring": RingState().as_dict(), "disks": [marker_doc]}).encode()


@settings(max_examples=60, deadline=None)
@given(markers, st.sampled_from(sorted(WRONG)))
def test_every_marker_field_is_checked(marker, name):
    doc = as_doc(marker)
    assert parse_state(_state(doc), 3).disks == [marker]
    if name == "region":
        doc["digest"] = "a" * 64                   # a region is checked against the digest's disk
    doc[name] = WRONG[name]
    with pytest.raises(StateError, match=f"disk 0 {name}"):
        parse_state(_state(doc), 3)


@settings(max_examples=30, deadline=None)
@given(markers)
def test_a_version_2_marker_has_no_region(marker):
    doc = as_doc(marker)
    del doc["region"]
    assert parse_state(_state(doc), 2).disks == [marker]
    doc["region"] = None
    with pytest.raises(StateError, match="unknown field region"):
        parse_state(_state(doc), 2)


def test_a_version_1_state_carries_its_overlay_inline():
    marker = DiskMarker(unit=0, path="/d.img", size=1024, inode=1, mtime_ns=2, cow=True, readonly=False,
                        digest=None, overlay=False)
    doc = dict(as_doc(marker), overlay=3)
    del doc["region"]
    body = json.dumps({"ring": RingState().as_dict(), "disks": [doc]}).encode()
    data = b"MPBK" + (1).to_bytes(2, "big") + len(body).to_bytes(4, "big") + body + b"abc"
    state = parse_state(data, 1)
    assert state.inline == {0: b"abc"} and state.disks == [dataclasses.replace(marker, overlay=True)]
    with pytest.raises(StateError, match="trailing bytes"):
        parse_state(data + b"x", 1)


def test_the_ring_is_checked_against_ram_and_disks():
    good = RingState(base=0x1000, n_el=16, running=True, cur_unit=0, cur_op=1, cur_pos=512).as_dict()
    assert RingState.from_dict(good, 1 << 20, [1024]).cur_pos == 512
    for change, words in [({"base": (1 << 20) - 16}, "ring base"), ({"n_el": 12}, "power of two"),
                          ({"cur_pos": 2048}, "ring cur_pos"), ({"cur_unit": 1}, "ring cur_unit"),
                          ({"head": 16}, "ring head"), ({"irq": 0}, "ring irq")]:
        with pytest.raises(StateError, match=words):
            RingState.from_dict(dict(good, **change), 1 << 20, [1024])
