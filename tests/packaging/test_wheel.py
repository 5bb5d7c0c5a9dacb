"""What ``pip install .`` makes: a wheel (and an sdist) with every runtime file inside,
installed into a fresh venv, from which ``wxnet serve`` and ``wxnet analyze`` work.

To stay fast and offline the fresh venv gets wxnet with ``--no-deps`` and sees the
dependencies of this checkout's venv through a ``.pth`` line placed after its own
site-packages (a ``.pth`` line adds a directory; it does not run that directory's own
``.pth`` files, so the checkout's editable wxnet stays invisible; the test checks that
the wxnet it runs is the installed copy)."""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
import tarfile
import urllib.request
import zipfile
from pathlib import Path

import pytest

from wxnet import __version__
from wxnet.sync.schema import SCHEMA_VERSION

ROOT = Path(__file__).resolve().parents[2]
WAIT = 60.0
#: Files besides Python modules that the package needs at run time.
RUNTIME_FILES = sorted(
    str(p.relative_to(ROOT / "src"))
    for p in (ROOT / "src" / "wxnet").rglob("*")
    if p.is_file() and p.suffix not in (".py", ".pyc") and "__pycache__" not in p.parts
)


def run(*argv: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in argv], capture_output=True, text=True, timeout=300, check=True, cwd=cwd
    )


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A clean copy of what `git archive` would give (no build/, no egg-info, no venv)."""
    dst = tmp_path_factory.mktemp("source") / "wxnet"
    dst.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, dst / name)
    shutil.copytree(
        ROOT / "src", dst / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
    )
    return dst


@pytest.fixture(scope="module")
def dists(source: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("dist")
    code = (
        "import sys\nfrom setuptools import build_meta as b\n"
        f"print('DIST', b.build_sdist({str(out)!r}))\n"
        f"print('DIST', b.build_wheel({str(out)!r}))\n"
    )
    lines = run(sys.executable, "-c", code, cwd=source).stdout.splitlines()
    names = [line.split()[1] for line in lines if line.startswith("DIST ")]
    return {"sdist": out / names[0], "wheel": out / names[1]}


def test_the_wheel_holds_every_runtime_file(dists: dict[str, Path]) -> None:
    names = set(zipfile.ZipFile(dists["wheel"]).namelist())
    assert set(RUNTIME_FILES) <= names, set(RUNTIME_FILES) - names
    assert "wxnet/server/web/static/index.html" in names and "wxnet/proto/wxnet.proto" in names
    entry = zipfile.ZipFile(dists["wheel"]).read(f"wxnet-{__version__}.dist-info/entry_points.txt")
    assert b"wxnet = wxnet.cli.main:main" in entry


def test_the_sdist_holds_the_source_and_every_runtime_file(dists: dict[str, Path]) -> None:
    with tarfile.open(dists["sdist"]) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    assert {"pyproject.toml", "README.md"} <= names
    assert {f"src/{f}" for f in RUNTIME_FILES} <= names


@pytest.fixture(scope="module")
def venv(source: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv holding wxnet as `pip install .` puts it there."""
    env = tmp_path_factory.mktemp("venv") / "v"
    run(sys.executable, "-m", "venv", "--without-pip", env)
    purelib = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    ours = Path(run(env / "bin/python", "-c", purelib).stdout.strip())
    (ours / "zz-wxnet-test-deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    run(sys.executable, "-m", "pip", "--python", env / "bin/python", "install", "-q",
        "--no-deps", "--no-build-isolation", "--no-index", source)  # fmt: skip
    return env


def test_installed_wxnet_is_the_copy_in_the_venv(venv: Path) -> None:
    where = run(venv / "bin/python", "-c", "import wxnet; print(wxnet.__file__)", cwd=venv).stdout
    assert where.startswith(str(venv)), where
    assert run(venv / "bin/wxnet", "--version").stdout.startswith(f"wxnet {__version__} ")


def test_analyze_runs_from_the_installed_package(venv: Path) -> None:
    out = run(
        venv / "bin/wxnet", "analyze", ROOT / "examples/wechat-sample.pcapng.gz",
        "--json", "--app", "wechat", cwd=venv,
    ).stdout  # fmt: skip
    flows = [json.loads(line) for line in out.splitlines()]
    assert len(flows) == 5 and {f["app"] for f in flows} == {"wechat"}


def test_serve_runs_from_the_installed_package(venv: Path, tmp_path: Path) -> None:
    from tests.packaging.test_units import NotifySocket

    ns = NotifySocket(tmp_path / "notify")
    proc = subprocess.Popen(
        [venv / "bin/wxnet", "serve", "--data", tmp_path / "var", "--long-port", "0",
         "--http-port", "0"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "NOTIFY_SOCKET": str(ns.path)},
    )  # fmt: skip
    try:
        status = ns.receive(WAIT)["STATUS"]
        port = status.rsplit(" ", 1)[1]
        base = f"http://127.0.0.1:{port}"
        with urllib.request.urlopen(f"{base}/healthz", timeout=WAIT) as r:
            health = json.loads(r.read())
        assert health == {
            "status": "ok",
            "version": __version__,
            "schema": SCHEMA_VERSION,
            "pid": proc.pid,
        }
        with urllib.request.urlopen(f"{base}/", timeout=WAIT) as r:  # the static web page
            assert r.status == 200 and b"<html" in r.read().lower()
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=WAIT)
        ns.close()
    assert proc.returncode == 0, err
