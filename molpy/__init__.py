"""molpy: Mac-on-Linux's block driver and session layer on a Unicorn PowerPC core.

The Python API (see README's "Use from Python")::

    import molpy
    config = molpy.MachineConfig.from_config(molpy.load_config("molrc"))
    machine = molpy.Machine.from_session("s.session", config)
    machine.run(seconds=1); machine.reset()

Names are imported when first used, so ``import molpy`` (and the CLI's start-up) pays
for none of the core until it is needed; molpy's engine is chosen as unicorn is first
imported.
"""

from __future__ import annotations

import os
import sys

__version__ = "0.1.0"

_API = {
    "Machine": "molpy.machine", "MachineConfig": "molpy.machine", "Stop": "molpy.machine",
    "load_config": "molpy.config", "Config": "molpy.config",
    "BlkdevSpec": "molpy.config", "BufferConsole": "molpy.console",
    "BlockError": "molpy.drivers.block", "GuestFault": "molpy.fault",
    # the error tree (docs/architecture.md): every failure molpy reports is a molpy.Error
    "Error": "molpy.errors", "ConfigError": "molpy.errors", "DiskError": "molpy.errors",
    "SessionError": "molpy.errors", "GuestError": "molpy.errors", "HostError": "molpy.errors",
    "EngineError": "molpy.engine",
}
__all__ = ["__version__", *_API]


def __getattr__(name: str):
    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module 'molpy' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def _map_source_tree() -> None:
    """In a source checkout, drivers/ and emulation/ sit beside molpy/ (setuptools maps them
    to molpy.drivers and molpy.emulation when it installs). Running from the checkout with
    a regular install imports this molpy/, so map them here the same way."""
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(here)
    if not os.path.isfile(os.path.join(root, "pyproject.toml")):
        return
    for name in ("drivers", "emulation"):
        full = f"{__name__}.{name}"
        init = os.path.join(root, name, "__init__.py")
        if full in sys.modules or os.path.isdir(os.path.join(here, name)) or not os.path.isfile(init):
            continue
        import importlib.util

        spec = importlib.util.spec_from_file_location(full, init, submodule_search_locations=[os.path.dirname(init)])
        module = importlib.util.module_from_spec(spec)
        sys.modules[full] = module
        spec.loader.exec_module(module)
        globals()[name] = module


_map_source_tree()


class _EngineFirst:
    """On sys.meta_path until unicorn is first imported: points the binding at molpy's
    engine just before (molpy.engine.select), so that a process that never runs a guest
    (``molpy run`` handed to the warm server) never pays for choosing it."""

    @classmethod
    def find_spec(cls, name, path=None, target=None):
        if name == "unicorn":
            if cls in sys.meta_path:
                sys.meta_path.remove(cls)
            from .engine import select

            select()
        return None


if "unicorn" not in sys.modules:
    sys.meta_path.insert(0, _EngineFirst)
