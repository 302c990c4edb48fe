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


def imports_at_module_level(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """What a module imports when it is imported (not inside functions, not TYPE_CHECKING)."""
    tree = ast.parse(path.read_text())
    base = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING":
            continue
        for n in ast.walk(node) if isinstance(node, (ast.If, ast.Try)) else [node]:
            if isinstance(n, ast.Import):
                out |= {a.name for a in n.names}
            elif isinstance(n, ast.ImportFrom):
                target = n.module or ""
                if n.level:
                    b = base
                    for _ in range(n.level - 1):
                        b = b.rsplit(".", 1)[0]
                    target = f"{b}.{n.module}" if n.module else b
                out.add(target)
                out |= {f"{target}.{a.name}" for a in n.names if f"{target}.{a.name}" in known}
    return {m for m in out if m in known and m != name}


def test_no_import_cycles():
    known = modules()
    graph = {m: imports_at_module_level(m, p, known) for m, p in known.items()}
    state: dict[str, int] = {}

    def visit(m: str, trail: list[str]) -> None:
        state[m] = 1
        for n in graph[m]:
            if state.get(n) == 1:
                raise AssertionError("import cycle: " + " -> ".join(trail[trail.index(n):] + [n]))
            if n not in state:
                visit(n, trail + [n])
        state[m] = 2

    for m in graph:
        if m not in state:
            visit(m, [m])


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
