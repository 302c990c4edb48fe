"""The architecture holds: no import cycles between molpy's modules, devices reach the
machine only through their DeviceContext, and drivers import no configuration reader."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGES = {"molpy": REPO / "molpy", "molpy.drivers": REPO / "drivers", "molpy.emulation": REPO / "emulation"}


def modules() -> dict[str, Path]:
    found = {}
    for package, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            rel = path.relative_to(folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            found[".".join([package, *parts])] = path
    return found


def _target(node: ast.ImportFrom, base: str) -> str:
    target = node.module or ""
    if node.level:
        b = base
        for _ in range(node.level - 1):
            b = b.rsplit(".", 1)[0]
        target = f"{b}.{node.module}" if node.module else b
    return target


def _names(nodes, base: str, known: dict[str, Path]) -> set[str]:
    out: set[str] = set()
    for n in nodes:
        if isinstance(n, ast.Import):
            out |= {a.name for a in n.names}
        elif isinstance(n, ast.ImportFrom):
            target = _target(n, base)
            out.add(target)
            out |= {f"{target}.{a.name}" for a in n.names if f"{target}.{a.name}" in known}
    return out


def _is_type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING"


def imports_at_module_level(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """What a module imports when it is imported (not inside functions, not TYPE_CHECKING)."""
    tree = ast.parse(path.read_text())
    base = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    nodes = []
    for node in tree.body:
        if _is_type_checking(node):
            continue
        nodes += ast.walk(node) if isinstance(node, (ast.If, ast.Try)) else [node]
    return {m for m in _names(nodes, base, known) if m in known and m != name}


def all_imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """Everything a module may import, at any time: function-level imports included (only
    ``if TYPE_CHECKING:`` blocks are left out, they never run)."""
    tree = ast.parse(path.read_text())
    base = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    skipped = {id(n) for node in ast.walk(tree) if _is_type_checking(node) for n in ast.walk(node)}
    nodes = [n for n in ast.walk(tree) if id(n) not in skipped]
    return {m for m in _names(nodes, base, known) if m in known and m != name}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}

    def visit(m: str, trail: list[str]) -> list[str] | None:
        state[m] = 1
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                return trail[trail.index(n):] + [n]
            if n not in state:
                found = visit(n, trail + [n])
                if found:
                    return found
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state:
            found = visit(m, [m])
            if found:
                return found
    return None


def test_no_import_cycles():
    known = modules()
    graph = {m: imports_at_module_level(m, p, known) for m, p in known.items()}
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_no_import_cycles_function_level_imports_included():
    """A function-level import is still a dependency: a cycle through one (run -> preflight
    -> commands.session -> run, once) means two layers each need the other."""
    known = modules()
    graph = {m: all_imports(m, p, known) for m, p in known.items()}
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_finder_sees_function_level_cycles(tmp_path):
    """The check above can fail: it finds a cycle made only of function-level imports."""
    (tmp_path / "a.py").write_text("def f():\n    from . import b\n")
    (tmp_path / "b.py").write_text("import os\n\ndef g():\n    from .a import f\n")
    (tmp_path / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from . import a\n")
    known = {f"p.{n}": tmp_path / f"{n}.py" for n in "abc"}
    graph = {m: all_imports(m, path, known) for m, path in known.items()}
    assert graph == {"p.a": {"p.b"}, "p.b": {"p.a"}, "p.c": set()}
    assert find_cycle(graph) == ["p.a", "p.b", "p.a"]
    assert imports_at_module_level("p.a", known["p.a"], known) == set()


CLI = ("molpy.cli", "molpy.commands", "molpy.__main__", "molpy.warm")   # the last: the script's entry, the warm server


def test_lower_layers_never_import_the_cli():
    """Only the CLI (molpy/cli.py, molpy/commands/, ``python -m molpy``, and molpy.warm: the
    ``molpy`` script's entry and the warm server's workers, which run the CLI) imports the CLI."""
    known = modules()
    for name, path in known.items():
        if name.startswith(CLI):
            continue
        bad = sorted(m for m in all_imports(name, path, known) if m.startswith(("molpy.cli", "molpy.commands")))
        assert not bad, (name, bad)


def test_devices_see_only_their_context():
    known = modules()
    for name, path in known.items():
        if not name.startswith("molpy.drivers."):
            continue
        text = path.read_text()
        imported = imports_at_module_level(name, path, known)
        assert not {"molpy.config", "molpy.machine", "molpy.molrc"} & imported, (name, imported)
        assert "self.machine" not in text and "machine.cpu" not in text, name


def test_every_package_is_installed():
    """A wheel (`pip install .`) holds only the packages pyproject lists: every folder with an
    __init__.py under molpy/, drivers/ and emulation/ must be listed."""
    import tomllib

    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = set()
    for name, root in PACKAGES.items():
        for init in root.rglob("__init__.py"):
            rel = init.parent.relative_to(root).parts
            found.add(".".join((name, *rel)))
    assert found <= listed, f"not in pyproject's packages: {sorted(found - listed)}"


# Modules split by job (issue 19): the lower one of each pair never imports what is built
# on it, so each job can be read, tested and loaded without the others.
BUILT_ON = {
    "molpy.drivers.oftree": {"molpy.drivers.oftree_file", "molpy.drivers.oftree_state", "molpy.drivers.devtree"},
    "molpy.drivers.oftree_file": {"molpy.drivers.oftree_state"},
    "molpy.drivers.oftree_state": {"molpy.drivers.oftree_file"},
    "molpy.emulation.session": {"molpy.emulation.session_write"},
    "molpy.emulation.ram_pages": {"molpy.emulation.session", "molpy.emulation.session_write"},
}


def test_modules_split_by_job_import_one_way():
    known = modules()
    for name, above in BUILT_ON.items():
        assert name in known and above <= set(known), (name, above - set(known))
        bad = sorted(all_imports(name, known[name], known) & above)
        assert not bad, f"{name} imports {bad}, which are built on it"
    assert all_imports("molpy.emulation.ram_pages", known["molpy.emulation.ram_pages"], known) == set()
