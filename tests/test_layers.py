"""commit.open_layer dispatches on the file's format (its magic) through LAYER_FORMATS."""

from __future__ import annotations

import pytest

from molpy.drivers import commit
from molpy.drivers.block import BlockError
from molpy.drivers.cow import MAGIC, Overlay


def test_an_overlay_opens_as_one(tmp_path):
    from molpy.drivers.raw import identity_of

    disk = tmp_path / "d.img"
    disk.write_bytes(bytes(64 * 512))
    Overlay.create(str(tmp_path / "o.cow"), identity_of(str(disk))).close()
    layer = commit.open_layer(str(tmp_path / "o.cow"), writable=False)
    try:
        assert isinstance(layer, Overlay)
    finally:
        layer.close()


def test_the_table_decides(tmp_path, monkeypatch):
    """A format registered in the table is opened by its own opener, by magic alone."""
    opened = []
    monkeypatch.setitem(commit.LAYER_FORMATS, b"TESTFMT1", lambda path, writable, lock: opened.append((path, writable)) or "layer")
    monkeypatch.setattr(commit, "MAGIC_BYTES", 8)
    f = tmp_path / "x.layer"
    f.write_bytes(b"TESTFMT1" + bytes(100))
    assert commit.open_layer(str(f)) == "layer" and opened == [(str(f), True)]


@pytest.mark.parametrize("content, why", [(b"NOTALAYER" + bytes(600), "bad magic"), (b"MOL", "too short")])
def test_an_unknown_format_is_refused(tmp_path, content, why):
    f = tmp_path / "x.img"
    f.write_bytes(content)
    with pytest.raises(BlockError, match=f"not a molpy overlay \\({why}"):
        commit.open_layer(str(f))
    assert MAGIC in commit.LAYER_FORMATS
