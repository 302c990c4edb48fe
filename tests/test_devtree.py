"""The device tree: MOL's oftree format as promif.c reads it, and PROM_IFACE (76) /
PROM_PATH_IFACE (77) answered as MOL answers, from guests; phandles across sessions."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from guestout import run_to_exit
from molpy.boot import bundled_guest
from molpy.console import BufferConsole
from molpy.drivers.devtree import build_tree
from molpy.drivers.device import DeviceError
from molpy.drivers.oftree import TreeError
from molpy.drivers.oftree_file import parse_tree
from molpy.drivers.oftree_state import from_json, to_json
from molpy.machine import Machine, MachineConfig
from probe import SCRATCH, Probe, signed

SNAPSHOT = Path("/work/.mirror/threader+Mac-On-Linux_all/repo")

# Our own tree, in MOL's format, with the parser's quirks on purpose.
TREE = """\
# a test tree for molpy (MOL's oftree format)
{
    (property name               <str>   "device-tree" )
    (property model              <str>   "molpy,test", "second" )
    (property #address-cells     <word>  0x00000001 )
    {
        (property name           <str>   "memory" )
        (property reg            <word>  0x00000000 0x00001000 )
    }
    {
        (unit_string f2000000 )
        (property name           <str>   "pci" )
        {
            (property name       <str>   "pci-bridge" )
            {
                (unit_string 0 )
                (mol_phandle 0x2000 )
                (property name   <str>   "mol-blk" )
                {
                    (unit_string * )
                    (property name  <str>  "disk" )
                }
            }
        }
    }
    {
        (property name           <str>   "chosen" )
        (property mac            <byte>  0x00 0x50 0xe4 300 )
        (property words          <word>  (0x1 0x2) )
        (property decimal        <word>  -1 17 )
        (property empty  )
        # (property commented    <str>   "no" )
        x (property not-at-line-start <str> "no" )
        (property after          <str>   "yes" ) (property same-line <str> "no" )
        {
            (property name       <str>   "Child" )
        }
        (property after-child    <str>   "not read" )
    }
    {
        (mol_phandle 0x10 )
        (property name           <str>   "low-phandle" )
    }
}
"""

# phandles: counted from 1 in file order, parents first; mol_phandle >= 0x1000 kept
PH = {"/": 1, "/memory": 2, "/pci@f2000000": 3, "/pci@f2000000/pci-bridge": 4,
      "/pci@f2000000/pci-bridge/mol-blk@0": 0x2000, "/pci@f2000000/pci-bridge/mol-blk@0/disk@*": 5,
      "/chosen": 6, "/chosen/Child": 7, "/low-phandle": 8}


@pytest.fixture
def tree_file(tmp_path) -> str:
    path = tmp_path / "oftree.test"
    path.write_text(TREE)
    return str(path)


# -- the parser --

def test_parse_structure_and_phandles():
    tree = parse_tree(TREE.encode())
    paths = {tree.full_name(n).decode(): n.phandle for n in tree.allnext}
    assert paths == PH
    assert tree.next_phandle == 9


def test_parse_values():
    tree = parse_tree(TREE.encode())
    root = tree.root
    assert root.prop(b"model") == b"molpy,test\0second\0"
    assert root.prop(b"#address-cells") == b"\0\0\0\1"
    chosen = tree.find_path(b"/chosen")
    assert chosen.prop(b"mac") == bytes([0, 0x50, 0xE4, 300 & 0xFF])
    assert chosen.prop(b"words") == bytes.fromhex("00000001 00000002")   # "(" skipped
    assert chosen.prop(b"decimal") == bytes.fromhex("ffffffff 00000011")
    assert chosen.prop(b"empty") == b""
    # a "(" not first on its line makes a comment; so does a second one on a line
    names = [n for n, _ in chosen.props]
    assert names == [b"name", b"mac", b"words", b"decimal", b"empty", b"after"]
    assert tree.find_path(b"/chosen/child").prop(b"after-child") is None


def test_parse_order_of_siblings_is_the_file_order():
    tree = parse_tree(TREE.encode())
    assert [c.name for c in tree.root.children()] == [b"memory", b"pci", b"chosen", b"low-phandle"]


@pytest.mark.parametrize("path, found", [
    ("/pci/pci-bridge/mol-blk", "/pci@f2000000/pci-bridge/mol-blk@0"),
    ("/PCI/Pci-Bridge/MOL-BLK/disk@3:0,\\\\:tbxi", "/pci@f2000000/pci-bridge/mol-blk@0/disk@*"),
    ("pci/pci-bridge", "/pci@f2000000/pci-bridge"),            # no leading slash needed
    ("//memory//", "/memory"),
    ("/@f2000000", "/pci@f2000000"),                           # unit only
    ("/pci@F2000000:args", "/pci@f2000000"),
    ("/pci@0", None),
    ("/chosen/child", "/chosen/Child"),
    ("/nothing", None),
    ("", "/"),
])
def test_path_lookup_as_mol(path, found):
    tree = parse_tree(TREE.encode())
    dn = tree.find_path(path.encode())
    assert (tree.full_name(dn).decode() if dn else None) == found


def test_create_node_makes_missing_parents():
    tree = parse_tree(TREE.encode())
    dn = tree.create_node(b"/rom/macos/")
    assert tree.full_name(dn) == b"/rom/macos"
    assert tree.find_path(b"/rom").phandle == 9 and dn.phandle == 10
    assert tree.root.child.name == b"rom"                     # a new node comes first
    assert tree.create_node(b"/rom/macos") is dn               # exists: no new node
    assert tree.create_node(b"no-slash") is None
    assert tree.full_name(tree.create_node(b"/pci/new@4")) == b"/pci@f2000000/new@4"


def test_hostile_files_are_refused_clearly():
    with pytest.raises(TreeError, match="nested deeper"):
        parse_tree(b"{" * 1000 + b"}" * 1000)
    with pytest.raises(TreeError, match="no node"):
        parse_tree(b"# nothing here\n")
    assert issubclass(TreeError, DeviceError)


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.text(alphabet="{}()<>\"#,@:*/ \n\t0xabcdefstrwordbyteproperty_unitmol-phandle19", max_size=400))
def test_any_text_parses_or_is_refused_and_saves_back(text):
    """Whatever the file holds: a tree (which survives its session encoding) or TreeError."""
    try:
        tree = parse_tree(text.encode())
    except TreeError:
        return
    again = from_json(to_json(tree))
    assert [(n.phandle, n.unit, n.props) for n in again.allnext] == \
           [(n.phandle, n.unit, n.props) for n in tree.allnext]
    assert to_json(again) == to_json(tree)


def test_damaged_saved_trees_are_refused():
    good = to_json(parse_tree(TREE.encode()))
    import json
    doc = json.loads(good)
    doc["nodes"][1][4] = 1                       # a node that is its own sibling
    with pytest.raises(TreeError):
        from_json(json.dumps(doc).encode())
    doc = json.loads(good)
    doc["nodes"][0][2] = 0                       # a parent loop
    with pytest.raises(TreeError):
        from_json(json.dumps(doc).encode())
    with pytest.raises(TreeError):
        from_json(b"{not json")


# -- the device, from guests --

def test_memory_reg_is_the_ram_size(tree_file):
    tree = build_tree(MachineConfig(oftree=tree_file), 48 << 20)
    assert tree.find_path(b"/memory").prop(b"reg") == bytes(4) + (48 << 20).to_bytes(4, "big") + bytes(24)


def test_the_walker_guest_sees_the_whole_tree(tree_file):
    code, out = run_to_exit(MachineConfig(ram_mib=16, bootfile=str(bundled_guest("oftree_walk")), oftree=tree_file))
    assert code == 9 and "parent mismatch" not in out
    nodes = [line.split()[1:3] for line in out.splitlines() if line.startswith("node ")]
    assert [(int(ph, 16), path) for ph, path in nodes] == [
        (1, "/"), (2, "/memory"), (3, "/pci@f2000000"), (4, "/pci@f2000000/pci-bridge"),
        (0x2000, "/pci@f2000000/pci-bridge/mol-blk@0"), (5, "/pci@f2000000/pci-bridge/mol-blk@0/disk@*"),
        (6, "/chosen"), (7, "/chosen/Child"), (8, "/low-phandle")]
    assert "  reg 32 " + "00000000" + "01000000" + "00" * 24 + "\n" in out   # /memory: 16 MiB
    assert "  model 18 6d6f6c70792c74657374007365636f6e6400\n" in out
    assert "  empty 0 \n" in out


def prom(p: Probe, op: int, ph: int = 0, *args: int) -> None:
    p.call(76, op, ph, *args)


def test_prom_iface_ops_as_mol_answers(tree_file):
    p = Probe(oftree=tree_file)
    name, buf = SCRATCH, SCRATCH + 0x100
    prom(p, 1, 0)                       # peer(0) = root
    prom(p, 1, 2)                       # peer(memory) = pci
    prom(p, 1, 8)                       # last sibling: 0
    prom(p, 2, 4)                       # child(pci-bridge) = mol-blk
    prom(p, 2, 2)                       # no child: 0
    prom(p, 3, 0x2000)                  # parent(mol-blk)
    prom(p, 3, 1)                       # parent(root): 0
    prom(p, 2, 0x999)                   # unknown phandle: -1
    prom(p, 4, 5, buf, 0x40)            # package-to-path: its length, strncpy'd
    p.dump(buf, 48)
    p.store(buf, b"\xcc" * 8)
    prom(p, 4, 5, buf, 4)               # short buffer: 4 bytes, no NUL, length still full
    p.dump(buf, 6)
    p.store(name, "reg")
    prom(p, 5, 2, name)                 # get-prop-len
    p.store(name + 16, "absent")
    prom(p, 5, 2, name + 16)            # -1
    prom(p, 6, 2, name, buf, 6)         # get-prop: copies min(len, size), answers len
    p.dump(buf, 8)
    prom(p, 6, 2, name, buf, 0xFFFFFFFF)  # negative size: -1
    p.store(name + 32, "")
    prom(p, 7, 2, name + 32, buf)       # next-prop(""): the first name
    p.dump(buf, 5)
    prom(p, 7, 2, name, buf)            # after the last: 0
    prom(p, 7, 2, name + 16, buf)       # after a name it does not have: 0
    prom(p, 12, 2)                      # bad op: -1
    a = p.run()
    assert a[0][0] == 1 and a[1][0] == 3 and a[2][0] == 0
    assert a[3][0] == 0x2000 and a[4][0] == 0
    assert a[5][0] == 4 and a[6][0] == 0
    assert signed(a[7][0]) == -1
    path = b"/pci@f2000000/pci-bridge/mol-blk@0/disk@*"
    assert a[8][0] == len(path) and a[9] == path + bytes(48 - len(path))
    assert a[10][0] == len(path) and a[11] == b"/pci\xcc\xcc"
    assert a[12][0] == 32 and signed(a[13][0]) == -1      # /memory reg: 8 words, RAM size
    assert a[14][0] == 32 and a[15] == bytes.fromhex("000000000100") + b"\xcc\xcc"
    assert signed(a[16][0]) == -1
    assert a[17][0] == 1 and a[18] == b"name\0"    # the host's reg replaced the file's in place
    assert a[19][0] == 0 and a[20][0] == 0
    assert signed(a[21][0]) == -1


def test_set_prop_change_phandle_and_paths(tree_file):
    p = Probe(oftree=tree_file)
    name, data, path = SCRATCH, SCRATCH + 0x100, SCRATCH + 0x400
    p.store(name, "new-prop")
    p.store(data, b"\x11\x22\x33")
    prom(p, 8, 6, name, data, 3)        # set-prop: a new property goes first
    p.store(name + 32, "")
    prom(p, 7, 6, name + 32, data + 64)
    p.dump(data + 64, 9)
    prom(p, 8, 6, name, data, 0x1001)   # over MOL's 0x1000 limit: -1
    prom(p, 8, 6, name, data, 0x1000)   # the limit itself is fine
    prom(p, 5, 6, name)
    prom(p, 9, 6, 0x3000)               # change-phandle to a free value: 0
    prom(p, 3, 7)                       # Child's parent now answers the new phandle
    prom(p, 9, 0x3000, 0x2000)          # taken by mol-blk: -1
    prom(p, 9, 0x3000, 0x3000)          # its own: 0
    p.store(path, "/rom/macos/")
    p.call(77, 16, path)                # create-node: /rom (9) then /rom/macos (10)
    p.call(77, 17, path)                # find-device finds it
    p.store(path + 64, "/nothing/here")
    p.call(77, 17, path + 64)           # -1
    p.call(77, 17, 0)                   # address 0: -1 (MOL's explicit check)
    p.call(77, 18, path)                # bad op: -1
    p.store(path + 128, "relative")
    p.call(77, 16, path + 128)          # no "/" to create under: -1
    a = p.run()
    assert a[0][0] == 3 and a[1][0] == 1 and a[2] == b"new-prop\0"
    assert signed(a[3][0]) == -1 and a[4][0] == 0x1000 and a[5][0] == 0x1000
    assert a[6][0] == 0 and a[7][0] == 0x3000
    assert signed(a[8][0]) == -1 and a[9][0] == 0
    assert a[10][0] == 10 and a[11][0] == 10
    assert [signed(x[0]) for x in a[12:16]] == [-1, -1, -1, -1]


def test_addresses_outside_ram_answer_minus_one(tree_file):
    ram = 16 << 20
    p = Probe(oftree=tree_file)
    p.store(SCRATCH, "reg")
    prom(p, 4, 2, ram, 16)              # buffer outside RAM
    prom(p, 4, 2, ram - 8, 16)          # a path that would run past RAM
    prom(p, 5, 2, ram + 4)              # name outside RAM
    prom(p, 6, 2, SCRATCH, ram - 4, 8)  # property copy past RAM
    p.store(ram - 4, b"abcd")          # no NUL before the end of RAM
    prom(p, 5, 2, ram - 4)
    p.call(77, 17, ram - 4)
    a = p.run()
    assert [signed(x[0]) for x in a] == [-1, -1, -1, -1, -1, -1]


def test_close_frees_the_tree_and_unregisters(tree_file):
    p = Probe(oftree=tree_file)
    p.call(0, 76)
    prom(p, 0)                          # kPromClose
    p.call(0, 76)
    p.call(0, 77)
    prom(p, 1, 0)                       # unknown selector now: MOL's unset vector, 0
    a = p.run()
    assert [x[0] for x in a] == [1, 0, 0, 0, 0]


def test_no_tree_without_oftree():
    p = Probe()
    p.call(0, 76)
    assert p.run()[0][0] == 0


def test_bad_tree_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "oftree.bad"
    bad.write_text("# no nodes\n")
    with pytest.raises(TreeError, match="no node"):
        Machine(MachineConfig(oftree=str(bad)))
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(TreeError, match="oftree is a FIFO"):
        Machine(MachineConfig(oftree=str(fifo)))
    with pytest.raises(TreeError, match="No such file"):
        Machine(MachineConfig(oftree=str(tmp_path / "missing")))


def test_cpu_node_is_imported_from_its_resource(tmp_path, tree_file):
    text = TREE.replace('''    {
        (mol_phandle 0x10 )''', '''    {
        (property name <str> "cpus" )
        {
            (property name <str> "dummy_cpu" )
            (property device_type <str> "cpu" )
        }
    }
    {
        (mol_phandle 0x10 )''')
    (tmp_path / "oftree.cpu").write_text(text)
    (tmp_path / "oftrees").mkdir()
    (tmp_path / "oftrees" / "g3.cpu").write_text('''{
        (unit_string 0 )
        (property name <str> "PowerPC,750" )
        (property device_type <str> "cpu" )
        { (property name <str> "l2-cache" ) }
    }''')
    config = MachineConfig(oftree=str(tmp_path / "oftree.cpu"), cpu="750",
                           resources={"ppc750_cpu": [["oftrees/g3.cpu"]], "lib": [[str(tmp_path)]]})
    tree = build_tree(config, 16 << 20)
    cpus = tree.find_path(b"/cpus")
    assert [c.name for c in cpus.children()] == [b"PowerPC,750"]
    assert tree.full_name(tree.find_path(b"/cpus/@0/l2-cache")) == b"/cpus/PowerPC,750@0/l2-cache"
    assert tree.find_path(b"/cpus/dummy_cpu") is None


# -- sessions --

def test_changes_and_phandles_survive_a_session(tree_file, tmp_path):
    session = str(tmp_path / "s.mol")
    p = Probe(oftree=tree_file)
    p.store(SCRATCH, "/rom/macos")
    p.call(77, 16, SCRATCH)
    p.store(SCRATCH + 64, "AAPL,toolbox-image,lzss")
    p.store(SCRATCH + 128, b"\x01\x10\x00\x00\x00\x00\x12\x34")
    prom(p, 8, 10, SCRATCH + 64, SCRATCH + 128, 8)
    prom(p, 9, 6, 0x4000)
    p.run(keep=True, extra="")
    m = p.machine
    m.run(seconds=0.3)
    m.save_session(session)
    m.close()
    # resumed: the guest reads what it made, by the same phandles
    r = Machine.from_session(session, MachineConfig(oftree=tree_file, session_file=session,
                                                    session_readonly=True), BufferConsole())
    try:
        tree = next(d for d in r.devices if d.kind == "OFTR").tree
        assert tree.node(10) is tree.find_path(b"/rom/macos")
        assert tree.node(10).prop(b"AAPL,toolbox-image,lzss") == bytes.fromhex("0110000000001234")
        assert tree.node(0x4000) is tree.find_path(b"/chosen") and tree.node(6) is None
        dev = next(d for d in r.devices if d.kind == "OFTR")
        # the resumed guest makes a node; reset throws it away with the rest of the run
        r.frontend.feed(f"s {SCRATCH} /later\nc 77 16 {SCRATCH} 0 0 0 0 0\n".encode())
        r.run(seconds=0.5)
        assert dev.tree.find_path(b"/later").phandle == 11
        r.reset()
        assert dev.tree.find_path(b"/later") is None and dev.tree.node(10) is not None
        assert dev.tree.next_phandle == 11
    finally:
        r.close()


# -- MOL's own tree, when MOL's snapshot is on this machine --

@pytest.mark.skipif(not SNAPSHOT.is_dir(), reason="MOL's source snapshot is not on this machine (CI)")
def test_mols_newworld_tree_parses_as_mol_reads_it():
    data = subprocess.run(["git", "-C", str(SNAPSHOT), "show", "HEAD:mol-src/mollib/oftrees/oftree.nw"],
                          capture_output=True, check=True).stdout
    tree = parse_tree(data, "oftree.nw")
    assert len(tree.allnext) == 74
    blk = tree.find_path(b"/pci/pci-bridge/mol-blk")
    assert tree.full_name(blk) == b"/pci/pci-bridge/mol-blk@0"
    assert tree.find_path(b"/pci/pci-bridge/mol-blk/disk@2:3").unit == "*"
    assert tree.find_path(b"/mol-platform") is None            # newworld, not the yaboot path
    assert tree.find_path(b"/pci/pci-bridge/mac-io/interrupt-controller").phandle == 0xFF861220
    assert tree.find_path(b"/chosen").prop(b"bootpath") == b"/pci/pci-bridge/mol-blk/disk@0:0,\\\\:tbxi\0"


# -- generated calls: no host exception, no write outside the buffer a call names --

_RAM = 2 << 20
_edges = st.sampled_from([0, 1, 2, 5, 8, 0x2000, 0xFFFFFFFF, 0x80000000, 0x1000, 0x1001,
                          _RAM - 1, _RAM, _RAM - 16, 0x100000])
_u32 = st.one_of(_edges, st.integers(0, 0xFFFFFFFF), st.integers(0x100000, 0x100100))


@pytest.fixture(scope="module")
def tree_machine(tmp_path_factory):
    path = tmp_path_factory.mktemp("gen") / "oftree"
    path.write_text(TREE)
    m = Machine(MachineConfig(ram_mib=_RAM >> 20, oftree=str(path)), BufferConsole())
    # names and paths the calls may point at
    for addr, text in ((0x100000, b"reg\0"), (0x100010, b"/pci/pci-bridge/mol-blk\0"),
                       (0x100040, b"\0"), (0x100050, b"/rom/new/node@3\0"), (_RAM - 4, b"abcd")):
        m.memory.write(addr, text)
    yield m
    m.close()


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(calls=st.lists(st.tuples(st.sampled_from([76, 77]), st.integers(0, 18),
                                st.one_of(st.sampled_from([0, 1, 2, 5, 6, 0x2000]), _u32),
                                _u32, _u32, _u32), min_size=1, max_size=6))
def test_generated_prom_calls(tree_machine, calls):
    import numpy as np
    m = tree_machine
    dev = next(d for d in m.devices if d.kind == "OFTR")
    for sel, op, ph, a2, a3, a4 in calls:
        if dev.tree is None or op == 0:
            continue                                  # close is checked on its own
        before = np.frombuffer(bytes(m.memory.view), dtype=np.uint8)
        if sel == 76:
            r = dev.prom_iface(op, ph, a2, a3, a4)
            buf, size = {4: (a2, a3), 6: (a3, a4), 7: (a3, 256)}.get(op, (0, 0))
        else:
            r = dev.prom_path_iface(op, ph)
            buf, size = 0, 0
        assert isinstance(r, int) and -1 <= r <= 0xFFFFFFFF
        after = np.frombuffer(bytes(m.memory.view), dtype=np.uint8)
        changed = np.flatnonzero(before != after)
        if changed.size:
            assert buf <= changed[0] and changed[-1] < buf + size, (sel, op, ph, a2, a3, a4)


def test_the_cpu_node_gets_this_machines_frequencies(tmp_path):
    """MOL's fix_cpu_node: the time base frequency the guest must use to count time is
    molpy's (25 MHz), the bus 4 x that, the clock the host's."""
    from molpy.drivers.devtree import host_cpu_hz
    from molpy.timebase import TB_FREQ

    tree_file = tmp_path / "tree"
    tree_file.write_text(TREE.replace('''        (property name           <str>   "memory" )''', '''        (property name           <str>   "cpu" )
        (property device_type    <str>   "cpu" )
        (property timebase-frequency <word> 0x01 )
    }
    {
        (property name           <str>   "memory" )'''))
    tree = build_tree(MachineConfig(oftree=str(tree_file)), 16 << 20)
    cpu = tree.find_type(b"cpu")
    assert int.from_bytes(cpu.prop(b"timebase-frequency"), "big") == TB_FREQ
    assert int.from_bytes(cpu.prop(b"bus-frequency"), "big") == 4 * TB_FREQ
    assert int.from_bytes(cpu.prop(b"clock-frequency"), "big") == host_cpu_hz() > 0
