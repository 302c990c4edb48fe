"""Builds molpy's engine (Unicorn with the exact-stops patch, docs/engine.md) as part of
``pip install``: the two set-up commands in README.md then do everything."""

import importlib.util
import os
import sys

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))


def _engine_builder():
    """molpy/engine as a package of its own: molpy's dependencies are not installed yet."""
    init = os.path.join(HERE, "molpy", "engine", "__init__.py")
    spec = importlib.util.spec_from_file_location("_molpy_engine", init,
                                                  submodule_search_locations=[os.path.dirname(init)])
    package = importlib.util.module_from_spec(spec)
    sys.modules["_molpy_engine"] = package
    spec.loader.exec_module(package)
    import _molpy_engine.build as builder
    return package, builder


def _say(line):
    """pip hides a build's output unless -v: say it on the terminal too, when there is one."""
    text = f"molpy engine: {line}\n"
    sys.stderr.write(text)
    try:
        with open("/dev/tty", "w") as tty:
            tty.write(text)
    except OSError:
        pass


class BuildWithEngine(build_py):
    def run(self):
        if os.environ.get("MOLPY_SKIP_ENGINE_BUILD") != "1":
            package, builder = _engine_builder()
            if package.built():
                _say(f"using the cached engine {package.engine_dir()}")
            else:
                _say(f"building Unicorn {package.UNICORN_VERSION} with molpy's exact-stops patch "
                     "(about a minute, once)")
                try:
                    builder.build(_say)
                except builder.BuildError as e:
                    sys.exit(f"molpy engine: {e}")
        super().run()
        self._copy_linux_sources()

    def _copy_linux_sources(self):
        """guest/linux (the kernel patches, config fragment and init.c) into the package, so
        an installed molpy can run ``molpy linux build`` and ``molpy img linux`` (molpy/linux/build.py)."""
        src = os.path.join(HERE, "guest", "linux")
        dest = os.path.join(self.build_lib, "molpy", "linux", "source")
        for folder, _, files in os.walk(src):
            for name in files:
                if name.endswith((".patch", ".config", ".c")):
                    target = os.path.join(dest, os.path.relpath(os.path.join(folder, name), src))
                    self.mkpath(os.path.dirname(target))
                    self.copy_file(os.path.join(folder, name), target, preserve_mode=False)


setup(cmdclass={"build_py": BuildWithEngine})
