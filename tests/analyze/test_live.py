"""``wxnet analyze --live``: a real AF_PACKET capture in network namespaces, against
traffic the test makes (wxnet's own client and server, and a TLS client asking for a
WeChat name), checking the labels; plus --bpf, --write and the end-of-capture summary.

client ns (10.98.0.1) -- veth -- server ns (10.98.0.2: wxnet serve on 80/8080, a TLS
listener on 443; the analysers capture on the server's end of the veth)
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import pytest

from wxnet.netns import Netns, new_suffix

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(
        os.geteuid() != 0 or shutil.which("ip") is None,
        reason="needs root and ip (CI is root: make sysdeps installs iproute2)",
    ),
]

CLIENT_IP, SERVER_IP = "10.98.0.1", "10.98.0.2"
ROOT = Path(__file__).resolve().parents[2]

# A TLS listener that completes nothing: it reads the ClientHello and closes.
_TLS_SINK = """
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], 443)); s.listen(8); print("ready", flush=True)
while True:
    c, _ = s.accept(); c.settimeout(5)
    try: c.recv(65536)
    except OSError: pass
    c.close()
"""
_TLS_CLIENT = """
import socket, ssl, sys
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
raw = socket.create_connection((sys.argv[1], 443), timeout=10)
try:
    ctx.wrap_socket(raw, server_hostname="szshort.weixin.qq.com")
except (OSError, ssl.SSLError):
    pass
raw.close()
"""


def sh(*cmd: str) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {proc.stderr.strip()}")
    return proc.stdout


def read_line(proc: subprocess.Popen[bytes], timeout: float, stderr: bool = False) -> str:
    """One line of the process's stdout (or stderr), waiting at most ``timeout`` s."""
    stream = proc.stderr if stderr else proc.stdout
    assert stream is not None
    fd = stream.fileno()
    buf = _pending.pop(stream, b"")
    deadline = time.monotonic() + timeout
    while b"\n" not in buf:
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            _pending[stream] = buf
            raise TimeoutError(f"no line from {proc.args!r} within {timeout} s")
        chunk = os.read(fd, 65536)
        if not chunk:
            return buf.decode()
        buf += chunk
    line, _, rest = buf.partition(b"\n")
    _pending[stream] = rest
    return line.decode() + "\n"


# Bytes read past the last line, per stream. Keyed by the stream object, not its fd
# number: fd numbers are reused by later processes, and a stale buffer of an earlier
# test's process must never be read as this one's output.
_pending: dict[IO[bytes], bytes] = {}


def finish(proc: subprocess.Popen[bytes]) -> tuple[str, str]:
    """Wait for the process; its remaining stdout (including what read_line has read
    past its last line) and stderr."""
    assert proc.stdout is not None and proc.stderr is not None
    head_out, head_err = _pending.pop(proc.stdout, b""), _pending.pop(proc.stderr, b"")
    out, err = proc.communicate(timeout=30)
    return (head_out + out).decode(), (head_err + err).decode()


@dataclass
class Pair:
    tmp: Path
    sfx: str = field(default_factory=new_suffix)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    net: Netns = field(default_factory=Netns)

    @property
    def client(self) -> str:
        return f"wxac-{self.sfx}"

    @property
    def server(self) -> str:
        return f"wxas-{self.sfx}"

    @property
    def iface(self) -> str:
        return f"wxas{self.sfx}"

    def setup(self) -> None:
        net, cif = self.net, f"wxac{self.sfx}"
        net.add(self.client, self.server)
        net.veth(self.client, cif, self.server, self.iface)
        net.addr(self.client, cif, f"{CLIENT_IP}/24")
        net.addr(self.server, self.iface, f"{SERVER_IP}/24")
        net.up(self.client, cif)
        net.up(self.server, self.iface)
        # Static neighbours: a burst must not wait in (and overflow) the ARP queue.
        net.neigh(self.client, cif, SERVER_IP, net.mac(self.server, self.iface))
        net.neigh(self.server, self.iface, CLIENT_IP, net.mac(self.client, cif))

    def spawn(self, ns: str, argv: list[str]) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            Netns.exec_argv(ns, argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=ROOT,
        )
        self.procs.append(proc)
        return proc

    def run(self, ns: str, argv: list[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            Netns.exec_argv(ns, argv),
            capture_output=True,
            text=True,
            timeout=60,
            cwd=ROOT,
            check=False,
        )

    def close(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            p.communicate(timeout=10)
        self.net.close()


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[Pair]:
    p = Pair(tmp_path)
    try:
        p.setup()
        yield p
    finally:
        p.close()


def wxnet(*args: str) -> list[str]:
    return [sys.executable, "-m", "wxnet", *args]


def test_live_capture_labels_wxnet_and_tls_traffic(pair: Pair, tmp_path: Path) -> None:
    data = tmp_path / "server-data"
    sh(*wxnet("store", "init", "--data", str(data)))
    sh(*wxnet("user", "add", "alice", "--password", "secret1", "--data", str(data)))
    server = pair.spawn(
        pair.server,
        wxnet("serve", "--data", str(data), "--host", SERVER_IP, "--long-port", "8080",
              "--http-port", "80"),
    )  # fmt: skip
    assert read_line(server, 30).startswith("wxnet serving")
    sink = pair.spawn(pair.server, [sys.executable, "-c", _TLS_SINK, SERVER_IP])
    assert read_line(sink, 20).strip() == "ready"
    saved = tmp_path / "live.pcapng"
    everything = pair.spawn(
        pair.server,
        wxnet("analyze", "--live", pair.iface, "--json", "--linger", "0.2",
              "--write", str(saved)),
    )  # fmt: skip
    only_tls = pair.spawn(
        pair.server, wxnet("analyze", "--live", pair.iface, "--bpf", "tcp port 443")
    )
    for proc in (everything, only_tls):
        assert "capturing on" in read_line(proc, 20, stderr=True)
    # The wxnet client: log in (short links over HTTP), send a message (long link, 8080).
    login = pair.run(
        pair.client,
        wxnet("login", "--server", f"http://{SERVER_IP}:80", "--user", "alice",
              "--password", "secret1", "--profile", str(tmp_path / "profile")),
    )  # fmt: skip
    assert login.returncode == 0, login.stderr
    sent = pair.run(
        pair.client, wxnet("send", "alice", "hello", "--profile", str(tmp_path / "profile"))
    )
    assert sent.returncode == 0, sent.stderr
    tls = pair.run(pair.client, [sys.executable, "-c", _TLS_CLIENT, SERVER_IP])
    assert tls.returncode == 0, tls.stderr
    # Flows are printed as they end (FIN both ways + linger): wait for the three kinds.
    flows: list[dict[str, Any]] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ports = {f["server_port"] for f in flows}
        if {80, 8080, 443} <= ports:
            break
        flows.append(json.loads(read_line(everything, deadline - time.monotonic())))
    everything.send_signal(signal.SIGINT)
    rest, err = finish(everything)
    assert everything.returncode == 0, err
    flows += [json.loads(line) for line in rest.splitlines()]
    by_port: dict[int, list[dict[str, Any]]] = {}
    for f in flows:
        by_port.setdefault(f["server_port"], []).append(f)
    assert all(f["server"] == SERVER_IP and f["client"] == CLIENT_IP for f in flows)
    kinds = {
        p: {f["evidence"][0]["kind"] for f in fs if f["evidence"]} for p, fs in by_port.items()
    }
    assert {f["app"] for f in by_port[8080]} == {"wechat"}
    assert "longlink-2014" in kinds[8080]
    assert {f["app"] for f in by_port[80]} == {"wechat"} and "http-path" in str(by_port[80])
    (tls_flow,) = by_port[443]
    assert tls_flow["app"] == "wechat" and kinds[443] == {"tls-sni"}
    assert "szshort.weixin.qq.com" in str(tls_flow["evidence"])
    assert tls_flow["client_packets"] and tls_flow["server_packets"]
    # The BPF-filtered analyser saw only the TLS flow; its summary came on SIGINT.
    only_tls.send_signal(signal.SIGINT)
    text, err = finish(only_tls)
    assert only_tls.returncode == 0, err
    assert "Summary by application" in text and "szshort.weixin.qq.com" in text
    assert ":8080" not in text and ":80 " not in text
    assert "packets dropped by the kernel" in text
    # What --write saved reads back as a capture with the same flows and labels.
    replay = subprocess.run(
        wxnet("analyze", "--json", str(saved)), capture_output=True, text=True, check=True
    )
    again = [json.loads(line) for line in replay.stdout.splitlines()]
    assert sorted((f["server_port"], f["app"]) for f in again) == sorted(
        (f["server_port"], f["app"]) for f in flows
    )
    # The same recording in tshark with contrib/wireshark/wxnet.lua: the long link's
    # packets are WXNET (cmd, seq), never HTTP; the short links stay HTTP.
    if shutil.which("tshark") is None:
        pytest.skip("needs tshark (make sysdeps installs it)")
    lua = ROOT / "contrib" / "wireshark" / "wxnet.lua"
    res = subprocess.run(
        ["tshark", "-n", "-X", f"lua_script:{lua}", "-r", str(saved), "-T", "fields",
         "-E", "occurrence=a", "-e", "tcp.srcport", "-e", "tcp.dstport",
         "-e", "_ws.col.Protocol", "-e", "wxnet.cmd", "-e", "wxnet.seq", "-e", "tcp.len"],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    rows = [line.split("\t") for line in res.stdout.splitlines()]
    long_link = [r for r in rows if "8080" in r[:2] and r[5] not in ("", "0")]
    # A segment that holds only part of a packet is shown as TCP until the rest arrives
    # (reassembly); none is HTTP, and the packets themselves are all WXNET.
    other = [r for r in long_link if r[2] != "WXNET"]
    assert long_link and all(r[2] == "TCP" and not r[3] for r in other), other
    assert len(other) < len(long_link) // 2, other
    wx_rows = [r for r in long_link if r[2] == "WXNET"]
    cmds = [int(c) for r in wx_rows for c in r[3].split(",")]
    assert 205 in cmds and 1_000_000_205 in cmds  # identify and its reply
    assert 522 in cmds and 1_000_000_522 in cmds  # newsendmsg and its reply
    seqs = {int(q) for r in wx_rows for q in r[4].split(",")}
    assert 1 in seqs
    assert any(r[2] == "HTTP" for r in rows if "80" in r[:2])


def test_live_errors_are_clear(pair: Pair) -> None:
    res = pair.run(pair.server, wxnet("analyze", "--live", "nosuch0"))
    assert res.returncode == 1 and "no such network interface: nosuch0" in res.stderr
    res = pair.run(pair.server, wxnet("analyze", "--live", pair.iface, "--bpf", "tcp port"))
    assert res.returncode == 1 and "bad --bpf filter" in res.stderr
    res = pair.run(pair.server, wxnet("analyze", "--bpf", "tcp", "x.pcap"))
    assert res.returncode == 2 and "--bpf and --write need --live" in res.stderr


def test_live_flow_table_is_bounded_and_counts_early_reports(pair: Pair) -> None:
    """A burst of 300 UDP flows into a table of 50: memory stays bounded, the flows
    reported early are counted in the summary, nothing is lost."""
    cap = pair.spawn(
        pair.server,
        wxnet("analyze", "--live", pair.iface, "--json", "--max-flows", "50",
              "--bpf", "udp port 9999"),
    )  # fmt: skip
    assert "capturing on" in read_line(cap, 20, stderr=True)
    burst = (
        "import socket, sys\n"
        "for i in range(300):\n"
        "    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
        "    s.sendto(b'x' * 20, (sys.argv[1], 9999)); s.close()\n"
    )
    res = pair.run(pair.client, [sys.executable, "-c", burst, SERVER_IP])
    assert res.returncode == 0, res.stderr
    seen = 0
    while seen < 30:  # early reports arrive while the capture runs
        line = read_line(cap, 30)
        if not line:
            _, err = finish(cap)
            pytest.fail(f"the analyser exited early (status {cap.returncode}): {err}")
        json.loads(line)
        seen += 1
    cap.send_signal(signal.SIGINT)
    rest, err = finish(cap)
    assert cap.returncode == 0, err
    flows = seen + len(rest.splitlines())
    # 300 datagrams from fresh sockets: a few may share an ephemeral port (one flow).
    counted = int(err.split(" flows, ")[0].rsplit(" ", 1)[1])
    assert "300 packets" in err and flows == counted and counted >= 290, err
    early = int(err.split(" flows reported early")[0].rsplit(" ", 1)[1])
    assert early >= counted - 50  # at most 50 were live at the end
