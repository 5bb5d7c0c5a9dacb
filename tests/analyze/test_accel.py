"""The compiled (mypyc) copies of the analyser's hot modules: used when built and
current, never when stale, never with WXNET_PURE=1. The analyser's tests run on both
paths (`make pytest` runs them again with WXNET_PURE=1)."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

import pytest

from wxnet import _accel
from wxnet.analyze import flows, loop

ROOT = Path(__file__).resolve().parents[2]


def _pure_forced() -> bool:
    return os.environ.get("WXNET_PURE", "") not in ("", "0")


def test_the_path_in_use_is_the_one_asked_for() -> None:
    compiled = loop.__file__ is not None and not loop.__file__.endswith(".py")
    if _pure_forced():
        assert not _accel.active() and not compiled
        assert flows.__file__ is not None and flows.__file__.endswith(".py")
        return
    if _accel.compiled_files() is None:
        pytest.skip("the compiled modules are not built (no C compiler at `make install`)")
    assert _accel.active() and compiled
    for name in _accel.MODULES:
        mod = sys.modules.get(name) or __import__(name, fromlist=["_"])
        assert mod.__file__ is not None and not mod.__file__.endswith(".py"), name


def _fake_build(tmp: Path, edit: str | None = None) -> tuple[Path, Path]:
    """A stamp over copies of the real sources, in ``tmp``: (accel dir, wxnet root)."""
    root = tmp / "wxnet"
    accel = tmp / "accel"
    lines = [f"python {sys.implementation.cache_tag} {EXTENSION_SUFFIXES[0]}"]
    for name in (*_accel.MODULES, _accel.LIB):
        rel = f"{name.replace('.', '/')}.so"
        (accel / rel).parent.mkdir(parents=True, exist_ok=True)
        (accel / rel).write_bytes(b"")
        digest = "-"
        if name != _accel.LIB:
            src = Path(_accel.source_path(name, str(root)))
            src.parent.mkdir(parents=True, exist_ok=True)
            data = Path(_accel.source_path(name)).read_bytes()
            src.write_bytes(data)
            digest = _accel.source_digest(data)
        lines.append(f"{name} {digest} {rel}")
    (accel / _accel.STAMP).write_text("\n".join(lines) + "\n")
    if edit is not None:
        src = Path(_accel.source_path(edit, str(root)))
        src.write_bytes(src.read_bytes() + b"\n# edited\n")
    return accel, root


def test_a_current_build_is_found(tmp_path: Path) -> None:
    accel, root = _fake_build(tmp_path)
    files = _accel.compiled_files(str(accel), str(root))
    assert files is not None and set(files) == {*_accel.MODULES, _accel.LIB}


@pytest.mark.parametrize("module", _accel.MODULES)
def test_a_source_edited_since_the_build_means_pure_python(tmp_path: Path, module: str) -> None:
    accel, root = _fake_build(tmp_path, edit=module)
    assert _accel.compiled_files(str(accel), str(root)) is None


def test_a_build_for_another_python_or_incomplete_is_not_used(tmp_path: Path) -> None:
    accel, root = _fake_build(tmp_path)
    stamp = accel / _accel.STAMP
    text = stamp.read_text()
    stamp.write_text(text.replace(sys.implementation.cache_tag, "cpython-299", 1))
    assert _accel.compiled_files(str(accel), str(root)) is None
    stamp.write_text(text)
    (accel / "wxnet/analyze/loop.so").unlink()
    assert _accel.compiled_files(str(accel), str(root)) is None
    assert _accel.compiled_files(str(tmp_path / "none"), str(root)) is None


def test_wxnet_pure_forces_the_python_modules() -> None:
    code = (
        "import wxnet._accel as a, wxnet.analyze.loop as m; "
        "print(a.active(), m.__file__.endswith('.py'))"
    )
    env = {**os.environ, "WXNET_PURE": "1"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == ["False", "True"]
