"""The README's and the docs' code blocks, run as a user would run them (issue 15), and
every shipped example checked, so that the documentation cannot drift from the code.

Every ``sh`` and ``toml`` block in ``README.md`` and ``docs/*.md`` carries an HTML
comment on the line above its fence that says how it is checked (a block without one
fails ``test_every_block_says_how_it_is_checked``)::

    <!-- doc-test: run -->           each command runs, in order, and must exit 0
    <!-- doc-test: root -->          the same, in the root-marked test (CI is root)
    <!-- doc-test: skip: REASON -->  not run, for the reason given
    <!-- doc-test: gate-policy -->   a TOML block: `wxnet gate check --policy-only` must accept it
    <!-- doc-test: server-config --> a TOML block: `wxnet serve --check-config` must accept it

``run`` and ``root`` take more lines, one per command they treat differently; each names
a whole command exactly as the block has it (without its comment), and each must match
exactly one command of its block:

* ``skip `CMD`: REASON``: that command is not run;
* ``background `CMD`: REASON``: it runs until stopped; the test starts it, waits for its
  first line of output, and after the block stops it with SIGINT (Ctrl-C), which must
  end it with status 0;
* ``server `CMD`: REASON`` (``make run &``): the test starts ``wxnet serve --data var``
  on free ports instead (never the machine's 8000 and 8080, which colleagues' servers may
  hold), waits for its banner, and writes its ports in place of 8000 and 8080 in the
  later commands of the file; at the end SIGTERM must stop it with status 0.

``run; outputs`` also checks output: a comment line right after a command is its exact
standard output. All blocks of one file run in one shell session, in a scratch directory
that links ``.venv``, ``examples`` and ``tests`` of this checkout (so ``./var`` and
``$HOME`` are the test's own); exported variables carry from one command to the next, and
``/tmp/`` in a command becomes the scratch directory's ``tmp/``.
"""

from __future__ import annotations

import contextlib
import os
import re
import select
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
CHECKED = ("sh", "toml")
MODES = ("run", "root", "skip", "gate-policy", "server-config")
WXNET = Path(sys.executable).parent / "wxnet"
WAIT = 60.0  # bound on every wait for a real event (commands on a loaded machine)
LINKED = (".venv", "examples", "tests")

_FENCE = re.compile(r"^(\s*)```(\w*)\s*$")
_DIRECTIVE = re.compile(r"^(skip|background|server) `([^`]+)`:\s*(.+)$")


@dataclass
class Block:
    path: Path
    line: int  # of the opening fence, 1-based
    lang: str
    lines: list[str]
    mode: str = ""
    reason: str = ""
    outputs: bool = False
    special: dict[str, tuple[str, str]] = field(default_factory=dict)  # cmd -> (kind, why)
    problems: list[str] = field(default_factory=list)

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"

    def commands(self) -> Iterator[tuple[int, str, list[str]]]:
        """(line number, command, expected output lines) for each command line."""
        i = 0
        while i < len(self.lines):
            raw = self.lines[i].strip()
            i += 1
            if not raw or raw.startswith("#"):
                continue
            cmd = strip_comment(raw)
            expected: list[str] = []
            while self.outputs and i < len(self.lines) and self.lines[i].strip().startswith("# "):
                expected.append(self.lines[i].strip()[2:])
                i += 1
            yield self.line + i - len(expected), cmd, expected


def strip_comment(line: str) -> str:
    """The command without its trailing ``# comment`` (a ``#`` after blank space, outside
    quotes, as the shell reads it)."""
    quote = ""
    for n, ch in enumerate(line):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (n == 0 or line[n - 1].isspace()):
            return line[:n].rstrip()
    return line.rstrip()


def parse_annotation(block: Block, comment: str) -> None:
    text = comment.strip()
    first, _, rest = text.partition("\n")
    head = first.removeprefix("doc-test:").strip()
    if head.startswith("skip:"):
        block.mode, block.reason = "skip", head[5:].strip()
        if not block.reason:
            block.problems.append("skip without a reason")
        return
    mode, _, opts = head.partition(";")
    block.mode = mode.strip()
    block.outputs = opts.strip().startswith("outputs")
    if block.mode not in MODES:
        block.problems.append(f"unknown mode {block.mode!r}")
    entries: list[str] = []
    for line in rest.splitlines():
        if _DIRECTIVE.match(line.strip()):
            entries.append(line.strip())
        elif entries and line.strip():
            entries[-1] += " " + line.strip()  # a reason continued on the next line
        elif line.strip():
            block.problems.append(f"cannot read the annotation line {line.strip()!r}")
    for entry in entries:
        m = _DIRECTIVE.match(entry)
        assert m is not None
        block.special[m.group(2)] = (m.group(1), m.group(3))
    cmds = [c for _, c, _ in block.commands()]
    for cmd in block.special:
        if cmds.count(cmd) != 1:
            block.problems.append(f"`{cmd}` names {cmds.count(cmd)} commands of the block, not 1")


def parse(path: Path) -> list[Block]:
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m or not m.group(2):
            i += 1
            continue
        start, indent = i, m.group(1)
        i += 1
        body: list[str] = []
        while i < len(lines) and lines[i].strip() != "```":
            body.append(lines[i][len(indent) :] if lines[i].startswith(indent) else lines[i])
            i += 1
        i += 1
        block = Block(path, start + 1, m.group(2), body)
        # The annotation: an HTML comment that ends on the line above the fence.
        if start > 0 and lines[start - 1].strip().endswith("-->"):
            j = start - 1
            while j >= 0 and "<!--" not in lines[j]:
                j -= 1
            comment = "\n".join(lines[j:start])
            comment = comment[comment.index("<!--") + 4 : comment.rindex("-->")]
            if comment.strip().startswith("doc-test:"):
                parse_annotation(block, comment)
        blocks.append(block)
    return blocks


ALL_BLOCKS = [b for doc in DOCS for b in parse(doc) if b.lang in CHECKED]


def test_every_block_says_how_it_is_checked() -> None:
    problems = [f"{b.where}: no <!-- doc-test: ... --> above it" for b in ALL_BLOCKS if not b.mode]
    problems += [f"{b.where}: {p}" for b in ALL_BLOCKS for p in b.problems]
    wanted = {"run": "sh", "root": "sh", "gate-policy": "toml", "server-config": "toml"}
    problems += [
        f"{b.where}: a {b.lang} block cannot be {b.mode!r}"
        for b in ALL_BLOCKS
        if wanted.get(b.mode, b.lang) != b.lang
    ]
    assert not problems, "\n".join(problems)


# ---- running a file's commands ----------------------------------------------------------


class Session:
    """One shell session for one file: scratch directory, environment, the server."""

    def __init__(self, scratch: Path) -> None:
        self.dir = scratch
        (scratch / "tmp").mkdir(parents=True)
        (scratch / "home").mkdir()
        for name in LINKED:
            (scratch / name).symlink_to(ROOT / name)
        self.env = {
            k: v for k, v in os.environ.items() if not k.startswith(("WXNET_", "NOTIFY_SOCKET"))
        }
        self.env["HOME"] = str(scratch / "home")
        self.state = scratch / ".env"
        self.ports: dict[str, str] = {}
        self.server: subprocess.Popen[bytes] | None = None
        self.background: list[tuple[str, subprocess.Popen[bytes]]] = []

    def rewrite(self, cmd: str) -> str:
        cmd = cmd.replace("/tmp/", f"{self.dir}/tmp/")
        for doc_port, port in self.ports.items():
            cmd = re.sub(rf"\b{doc_port}\b", port, cmd)
        return cmd

    def run(self, where: str, cmd: str, expected: list[str], doc: bool = True) -> None:
        script = (
            f"{self.rewrite(cmd) if doc else cmd}\n__rc=$?\nenv -0 > {self.state}\nexit $__rc\n"
        )
        done = subprocess.run(
            ["bash", "-c", script], cwd=self.dir, env=self.env, capture_output=True,
            text=True, timeout=300, check=False,
        )  # fmt: skip
        assert done.returncode == 0, (
            f"{where}: `{cmd}` exited {done.returncode}\n"
            f"stdout:\n{done.stdout[-3000:]}\nstderr:\n{done.stderr[-3000:]}"
        )
        if expected:
            assert done.stdout.splitlines() == expected, f"{where}: `{cmd}` printed {done.stdout!r}"
        pairs = (kv.partition("=") for kv in self.state.read_text().split("\0") if "=" in kv)
        self.env = {k: v for k, _, v in pairs}

    def start_server(self, where: str) -> None:
        if self.server is not None:
            return  # a second `make run &` in the same file: it is already running
        self.server = subprocess.Popen(
            [str(WXNET), "serve", "--data", "var", "--long-port", "0", "--http-port", "0"],
            cwd=self.dir, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        line = read_line(self.server, where)
        m = re.match(r"wxnet serving: long link [\d.]+:(\d+).*HTTP http://[\d.]+:(\d+)/", line)
        assert m, f"{where}: unexpected banner {line!r}"
        self.ports = {"8080": m.group(1), "8000": m.group(2)}

    def start_background(self, where: str, cmd: str) -> None:
        # `exec env CMD`: the command itself (not a shell) gets the SIGINT, also when it
        # starts with VAR=value assignments.
        proc = subprocess.Popen(
            ["bash", "-c", f"exec env {self.rewrite(cmd)}"], cwd=self.dir, env=self.env,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        read_line(proc, where)  # it runs (and has its signal handling in place)
        self.background.append((where, proc))

    def stop_background(self) -> None:
        while self.background:
            where, proc = self.background.pop()
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=WAIT)
            assert proc.returncode == 0, f"{where}: Ctrl-C ended it with {proc.returncode}: {err!r}"

    def close(self) -> None:
        for _, proc in self.background:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.communicate()
        if self.server is not None:
            self.server.terminate()
            _, err = self.server.communicate(timeout=WAIT)
            assert self.server.returncode == 0, err.decode()[-3000:]


def read_line(proc: subprocess.Popen[bytes], where: str) -> str:
    """The first line ``proc`` prints on stdout, waiting at most WAIT seconds."""
    assert proc.stdout is not None
    fd, got = proc.stdout.fileno(), b""
    while not got.endswith(b"\n"):
        ready, _, _ = select.select([fd], [], [], WAIT)
        chunk = os.read(fd, 1) if ready else b""
        if not chunk:
            proc.kill()
            _, err = proc.communicate()
            raise AssertionError(f"{where}: no line from the command ({got!r}); stderr {err!r}")
        got += chunk
    return got.decode()


def run_blocks(path: Path, mode: str, scratch: Path) -> int:
    session = Session(scratch)
    ran = 0
    try:
        for block in (b for b in ALL_BLOCKS if b.path == path):
            if block.mode == "gate-policy" and mode == "run":
                policy = scratch / f"block-{block.line}.toml"
                policy.write_text("\n".join(block.lines) + "\n")
                session.run(
                    block.where, f"{WXNET} gate check --policy-only {policy}", [], doc=False
                )
                ran += 1
            elif block.mode == "server-config" and mode == "run":
                conf = scratch / f"block-{block.line}.toml"
                conf.write_text("\n".join(block.lines) + "\n")
                session.run(
                    block.where, f"{WXNET} serve --check-config --config {conf}", [], doc=False
                )
                ran += 1
            if block.mode != mode:
                continue
            for line, cmd, expected in block.commands():
                where = f"{path.relative_to(ROOT)}:{line}"
                kind = block.special.get(cmd, ("run", ""))[0]
                if kind == "skip":
                    continue
                if kind == "server":
                    session.start_server(where)
                elif kind == "background":
                    session.start_background(where, cmd)
                else:
                    session.run(where, cmd, expected)
                ran += 1
            session.stop_background()
    finally:
        session.close()
    return ran


def _files(mode: str) -> list[Path]:
    return [d for d in DOCS if any(b.path == d and b.mode == mode for b in ALL_BLOCKS)]


def _checked_files() -> list[Path]:
    kinds = ("run", "gate-policy", "server-config")
    return [d for d in DOCS if any(b.path == d and b.mode in kinds for b in ALL_BLOCKS)]


@pytest.mark.parametrize("doc", _checked_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_the_commands_of(doc: Path, tmp_path: Path) -> None:
    assert run_blocks(doc, "run", tmp_path / "s") > 0


@pytest.mark.root
@pytest.mark.parametrize("doc", _files("root"), ids=lambda p: str(p.relative_to(ROOT)))
def test_the_root_commands_of(doc: Path, tmp_path: Path) -> None:
    if os.geteuid() != 0:  # CI is root: there these always run
        pytest.skip("needs root (network namespaces and nftables)")
    assert run_blocks(doc, "root", tmp_path / "s") > 0


# ---- the shipped examples -----------------------------------------------------------------

EXAMPLES = sorted(p for p in (ROOT / "examples").iterdir() if p.is_file())


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_example_is_documented_and_valid(path: Path) -> None:
    text = "\n".join(d.read_text(encoding="utf-8") for d in DOCS)
    assert f"examples/{path.name}" in text, f"no doc names examples/{path.name}"
    cmd: list[str] = []
    if path.suffix == ".toml" and "[gate]" in path.read_text():
        cmd = [str(WXNET), "gate", "check", "--policy-only", str(path)]
    elif path.suffix == ".toml":  # a signature file
        sample = ROOT / "examples/wechat-sample.pcapng.gz"
        cmd = [str(WXNET), "analyze", str(sample), "--signatures", str(path), "--summary"]
    elif path.name.endswith(".pcapng.gz"):
        cmd = [str(WXNET), "analyze", str(path), "--summary"]
        assert path.stat().st_size < 16 * 1024, "a sample capture stays small"
    elif path.suffix == ".jpg":
        from PIL import Image

        with Image.open(path) as im:
            im.verify()
        assert path.stat().st_size < 16 * 1024
    elif path.suffix == ".amr":
        assert path.read_bytes().startswith(b"#!AMR\n")
    elif path.suffix == ".py":
        compile(path.read_text(), str(path), "exec")
    else:
        raise AssertionError(f"no check for {path.name}: add one")
    if cmd:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 0, done.stderr
