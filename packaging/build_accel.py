"""Compile the capture analyser's hot modules with mypyc (``make install`` runs this).

    python packaging/build_accel.py [--clean]

Builds :data:`wxnet._accel.MODULES` in ``build/accel/`` and installs the extension
modules, with a stamp of the sources they came from, into ``build/accel/lib/``, where
``wxnet/_accel.py`` finds them. Without a C compiler, Python's headers or mypy it says
so and exits 0: wxnet then runs those modules as pure Python (same behaviour, slower).
``--clean`` removes the compiled copies (pure Python from then on).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src"
sys.path.insert(0, str(SRC))

from wxnet._accel import LIB, MODULES, STAMP, source_digest, source_path  # noqa: E402

TARGET = ROOT / "build" / "accel" / "lib"
BUILD = ROOT / "build" / "accel"


def _skip(why: str) -> int:
    print(
        f"wxnet: {why}; the analyser runs as pure Python (same results, slower). "
        "`make sysdeps` installs gcc and python3-dev.",
        file=sys.stderr,
    )
    return 0


def main() -> int:
    if "--clean" in sys.argv[1:]:
        shutil.rmtree(TARGET, ignore_errors=True)
        return 0
    cc = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(cc) is None:
        return _skip(f"no C compiler ({cc})")
    if not (Path(sysconfig.get_paths()["include"]) / "Python.h").exists():
        return _skip("no Python headers (Python.h)")
    try:
        import mypyc.build  # noqa: F401
    except ImportError:
        # `make install` has only the runtime: fetch the pinned mypy (it brings mypyc).
        pip = [sys.executable, "-m", "pip", "install", "-q", "-c", str(ROOT / "constraints.txt")]
        if subprocess.run([*pip, "mypy", "setuptools"]).returncode != 0:
            return _skip("mypyc (part of mypy) could not be installed")
    paths = [str(Path(source_path(m, str(SRC / "wxnet"))).relative_to(SRC)) for m in MODULES]
    digests = {
        m: source_digest(Path(source_path(m, str(SRC / "wxnet"))).read_bytes()) for m in MODULES
    }
    BUILD.mkdir(parents=True, exist_ok=True)
    out = Path(tempfile.mkdtemp(prefix="lib.", dir=BUILD))
    code = (
        "import sys\n"
        "from setuptools import setup\n"
        "from mypyc.build import mypycify\n"
        f"setup(name='wxnet-accel', script_args=['build_ext', '--build-lib', {str(out)!r},"
        f" '--build-temp', {str(BUILD / 'temp')!r}],"
        f" ext_modules=mypycify({paths!r}, group_name={LIB.removesuffix('__mypyc')!r},"
        f" target_dir={str(BUILD / 'c')!r}, opt_level='3'))\n"
    )
    print(f"wxnet: compiling {len(MODULES)} analyser modules with mypyc (about a minute)")
    res = subprocess.run(
        [sys.executable, "-c", code],
        cwd=SRC,
        capture_output=True,
        text=True,
        env={**os.environ, "MYPY_FORCE_COLOR": "0"},
    )
    if res.returncode != 0:
        shutil.rmtree(out, ignore_errors=True)
        sys.stderr.write(res.stdout[-4000:] + res.stderr[-4000:])
        return _skip("the mypyc build failed (output above)")
    suffix = EXTENSION_SUFFIXES[0]
    lines = [f"python {sys.implementation.cache_tag} {suffix}"]
    staged = Path(tempfile.mkdtemp(prefix="stage.", dir=BUILD))
    for name in (*MODULES, LIB):
        rel = Path(*name.split(".")).with_name(name.split(".")[-1] + suffix)
        built = out / rel
        if not built.exists():
            shutil.rmtree(out, ignore_errors=True)
            return _skip(f"the mypyc build made no {rel}")
        (staged / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(built, staged / rel)
        lines.append(f"{name} {digests.get(name, '-')} {rel.as_posix()}")
    (staged / STAMP).write_text("\n".join(lines) + "\n", encoding="ascii")
    shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(TARGET, ignore_errors=True)
    staged.rename(TARGET)
    print(f"wxnet: compiled analyser modules installed in {TARGET.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
