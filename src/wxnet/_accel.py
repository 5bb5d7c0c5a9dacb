"""Compiled copies of the capture analyser's hot modules, when they were built.

``make install`` (``packaging/build_accel.py``) compiles :data:`MODULES` with mypyc
into ``build/accel/lib/`` of the checkout and records each source file's size and CRC-32 in
``stamp.txt`` there. When ``wxnet`` is imported, :func:`install` puts a finder first on
``sys.meta_path`` that loads those modules from the compiled files, but only if every
recorded source is unchanged and the build is for this interpreter; otherwise (not
built, no C compiler at install time, a source edited since, another Python) the
ordinary ``.py`` modules load, with the same behaviour, only slower. ``WXNET_PURE=1`` in
the environment forces the pure-Python modules (the test suite runs the analyser tests
both ways).
"""

from __future__ import annotations

import os
import sys
import zlib
from importlib.machinery import EXTENSION_SUFFIXES, ExtensionFileLoader, ModuleSpec
from types import ModuleType

__all__ = ["MODULES", "active", "install"]

#: The modules compiled (the analyser's packet loop and what it calls per flow).
MODULES = (
    "wxnet.analyze.loop",
    "wxnet.analyze.flows",
    "wxnet.analyze.capture",
    "wxnet.classify.classifier",
    "wxnet.classify.dns",
    "wxnet.proto.sniff",
    "wxnet.proto.value",
)
#: mypyc's shared library for the group (one top-level module).
LIB = "wxnet_accel__mypyc"
ROOT = os.path.dirname(os.path.abspath(__file__))  # .../src/wxnet
#: Where the build puts them: the checkout's build/ (outside the package, so no wheel or
#: sdist picks them up; an installed wheel has no such directory and runs pure Python).
DIR = os.path.join(os.path.dirname(os.path.dirname(ROOT)), "build", "accel", "lib")
STAMP = "stamp.txt"


class _Finder:
    """Finds the compiled modules (and mypyc's shared library) by exact name."""

    def __init__(self, files: dict[str, str]) -> None:
        self.files = files

    def find_spec(
        self, name: str, path: object = None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        file = self.files.get(name)
        if file is None:
            return None
        return ModuleSpec(name, ExtensionFileLoader(name, file), origin=file)


def source_digest(data: bytes) -> str:
    """What the stamp records of a source file: its size and CRC-32 (a check that the
    compiled copy was built from these bytes, not a security measure)."""
    return f"{len(data)}:{zlib.crc32(data):08x}"


def source_path(module: str, root: str = ROOT) -> str:
    """The ``.py`` file of one of :data:`MODULES` under the ``wxnet`` directory ``root``."""
    return os.path.join(root, *module.split(".")[1:]) + ".py"


def compiled_files(accel_dir: str = DIR, root: str = ROOT) -> dict[str, str] | None:
    """Module name -> compiled file, when the build in ``accel_dir`` is complete, for
    this interpreter, and made from the current sources; else ``None``."""
    try:
        with open(os.path.join(accel_dir, STAMP), encoding="ascii") as f:
            lines = f.read().split("\n")
    except OSError:
        return None
    if not lines or lines[0] != f"python {sys.implementation.cache_tag} {EXTENSION_SUFFIXES[0]}":
        return None
    files: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, digest, rel = line.split(" ", 2)
        file = os.path.join(accel_dir, rel)
        if not os.path.exists(file):
            return None
        if name != LIB:
            try:
                with open(source_path(name, root), "rb") as src:
                    if source_digest(src.read()) != digest:
                        return None
            except OSError:
                return None
        files[name] = file
    if LIB not in files or any(m not in files for m in MODULES):
        return None
    return files


_installed: _Finder | None = None


def install() -> bool:
    """Load the compiled modules from now on, if they are usable (see the module doc).
    Returns whether they will be used. Called once, by ``wxnet/__init__.py``."""
    global _installed
    if _installed is not None:
        return True
    if os.environ.get("WXNET_PURE", "") not in ("", "0"):
        return False
    files = compiled_files()
    if files is None:
        return False
    _installed = _Finder(files)
    sys.meta_path.insert(0, _installed)
    return True


def active() -> bool:
    """Whether the compiled modules are being used (``wxnet analyze --version`` style
    reports and the tests)."""
    return _installed is not None
