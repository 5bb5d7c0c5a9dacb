"""Network namespaces for the gateway tests: phone -- gateway -- internet.

Built with :mod:`wxnet.netns`: every name carries a per-run random suffix (other
engineers run namespace tests on the same machine at the same time);
:meth:`World.close` removes everything.
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from wxnet.netns import Netns, new_suffix

HELPER = str(Path(__file__).with_name("nshelper.py"))
PHONE_IP, GW_LAN_IP = "10.77.0.2", "10.77.0.1"
GW_WAN_IP, INET_IP = "198.18.0.1", "198.18.0.2"
UPSTREAM_DNS, FOREIGN_DNS = "198.18.1.53", "198.18.4.53"
WECHAT_DNS_IP = "198.18.2.10"  # what the zone answers for WeChat names
WECHAT_HARDCODED = ("198.18.2.20", "198.18.2.21", "198.18.2.22")  # never in DNS
VIDEO_IP, CHECK_IP = "198.18.3.10", "198.18.3.20"
SERVER_IP = "198.18.2.30"  # the real wxnet server (szlong.weixin.qq.com)
PHONE6, GW_LAN6, GW_WAN6, INET6 = "fd77::2", "fd77::1", "fd18::1", "fd18::2"
PHONE2_IP, PHONE2_6 = "10.77.0.3", "fd77::3"  # a second device on the same LAN
WECHAT6, VIDEO6 = "fd18:2::20", "fd18:3::10"  # hard-coded WeChat and the video site, IPv6
WECHAT6_DNS = "fd18:2::10"  # the AAAA answer for short.weixin.qq.com
HUGE_TTL_IP = "198.18.2.11"  # answered with TTL 2^31
CDN_IP = "198.18.3.30"  # mmbiz.qpic.cn CNAME edge.cdn.example: a shared CDN
NGD_IP, NGD6 = "198.18.2.40", "fd18:2::40"  # only a newgetdns answer names these
CLOUD_VM = "43.135.1.1"  # inside a Tencent Cloud customer block (tencent-cloud.toml)
#: the test's "operator-owned" WeChat ranges (declared with [apps.wechat] operator-ranges)
OPERATOR_RANGES = ("198.18.2.16/29", "fd18:2::20/126")
SERVER_BUILTIN = "198.18.2.17"  # the wxnet server's built-in address (in the range)
SERVER_NGD = "198.18.2.31"  # the wxnet server's address that only newgetdns gives
ECHO_ADDRS = (
    UPSTREAM_DNS, WECHAT_DNS_IP, *WECHAT_HARDCODED, VIDEO_IP, CHECK_IP, WECHAT6, VIDEO6,
    WECHAT6_DNS, HUGE_TTL_IP, CDN_IP, NGD_IP, NGD6, CLOUD_VM,
)  # fmt: skip
INET_ADDRS = (*ECHO_ADDRS, FOREIGN_DNS, SERVER_IP, SERVER_BUILTIN, SERVER_NGD)


SERVER_NAT = f"""table ip wxsrv {{
    chain pre {{
        type nat hook prerouting priority dstnat; policy accept;
        ip daddr {{ {SERVER_BUILTIN}, {SERVER_NGD} }} dnat to {SERVER_IP}
    }}
}}
"""


def sh(
    *cmd: str, check: bool = True, input_text: str | None = None
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        cmd, capture_output=True, text=True, check=False, timeout=30, input=input_text
    )
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {proc.stderr.strip()}")
    return proc


_PENDING: dict[tuple[int, int], bytes] = {}  # (pid, fd) -> bytes past the last line


def read_line(proc: subprocess.Popen[str], timeout: float, stderr: bool = False) -> str:
    """One stdout (or stderr) line from ``proc``, waiting at most ``timeout`` seconds.

    Reads the file descriptor directly (a buffered text stream would hide lines it has
    already read from ``select``)."""
    stream = proc.stderr if stderr else proc.stdout
    assert stream is not None
    fd = stream.fileno()
    key = (proc.pid, fd)
    deadline = time.monotonic() + timeout
    buf = _PENDING.pop(key, b"")
    while b"\n" not in buf:
        remaining = deadline - time.monotonic()
        ready, _, _ = select.select([fd], [], [], max(0.0, remaining))
        if not ready:
            _PENDING[key] = buf
            raise TimeoutError(f"no output from {proc.args!r} within {timeout}s")
        chunk = os.read(fd, 65536)
        if not chunk:
            return buf.decode(errors="replace")
        buf += chunk
    line, _, rest = buf.partition(b"\n")
    if rest:
        _PENDING[key] = rest
    return line.decode(errors="replace") + "\n"


#: The marks of a module that needs root, nft and ip (CI is root and has them).
NEEDS_ROOT_NFT = [
    pytest.mark.root,
    pytest.mark.skipif(
        os.geteuid() != 0 or shutil.which("nft") is None or shutil.which("ip") is None,
        reason="needs root, nft and ip (CI is root: make sysdeps installs them)",
    ),
]


@dataclass
class World:
    tmp: Path
    sfx: str = field(default_factory=new_suffix)
    procs: list[subprocess.Popen[str]] = field(default_factory=list)
    net: Netns = field(default_factory=Netns)

    @property
    def phone(self) -> str:
        return f"wxph-{self.sfx}"

    @property
    def phone2(self) -> str:
        return f"wxp2-{self.sfx}"

    @property
    def gw(self) -> str:
        return f"wxgw-{self.sfx}"

    @property
    def inet(self) -> str:
        return f"wxin-{self.sfx}"

    @property
    def lan_if(self) -> str:
        """The gateway's LAN: a bridge with both phones' veths on it."""
        return f"wxgb{self.sfx}"

    @property
    def log(self) -> Path:
        return self.tmp / "internet.jsonl"

    def setup(self) -> None:
        s, net = self.sfx, self.net
        net.add(self.phone, self.phone2, self.gw, self.inet)
        for ns, dev, port in ((self.phone, f"wxpl{s}", f"wxg1{s}"),
                              (self.phone2, f"wxp2{s}", f"wxg2{s}")):  # fmt: skip
            net.veth(ns, dev, self.gw, port)
        net.bridge(self.gw, self.lan_if, ports=(f"wxg1{s}", f"wxg2{s}"))
        net.veth(self.gw, f"wxgw{s}", self.inet, f"wxiw{s}")
        for ns, dev, addr, addr6 in (
            (self.phone, f"wxpl{s}", f"{PHONE_IP}/24", f"{PHONE6}/64"),
            (self.phone2, f"wxp2{s}", f"{PHONE2_IP}/24", f"{PHONE2_6}/64"),
            (self.gw, self.lan_if, f"{GW_LAN_IP}/24", f"{GW_LAN6}/64"),
            (self.gw, f"wxgw{s}", f"{GW_WAN_IP}/24", f"{GW_WAN6}/64"),
            (self.inet, f"wxiw{s}", f"{INET_IP}/24", f"{INET6}/64"),
        ):
            net.addr(ns, dev, addr, addr6)
            net.up(ns, dev)
        net.addr(self.inet, "lo", *(f"{a}/{128 if ':' in a else 32}" for a in INET_ADDRS))
        for ph in (self.phone, self.phone2):
            net.route(ph, "default", GW_LAN_IP)
            net.route(ph, "default", GW_LAN6)
        # the wxnet server answers on its built-in and newgetdns-only addresses too
        sh("ip", "netns", "exec", self.inet, "nft", "-f", "-", input_text=SERVER_NAT)
        net.route(self.gw, "default", INET_IP)
        net.route(self.inet, "10.77.0.0/24", GW_WAN_IP)
        net.route(self.gw, "default", INET6)
        net.route(self.inet, "fd77::/64", GW_WAN6)
        net.forwarding(self.gw, ipv6=True)
        srv = self.spawn(
            self.inet,
            [sys.executable, HELPER, "serve", "--log", str(self.log),
             "--dns", UPSTREAM_DNS, "--foreign-dns", FOREIGN_DNS, "--echo", ",".join(ECHO_ADDRS)],
        )  # fmt: skip
        line = read_line(srv, 20)
        assert line.strip() == "ready", line

    def spawn(self, ns: str, argv: list[str]) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            Netns.exec_argv(ns, argv),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.procs.append(proc)
        return proc

    def probe(self, kind: str, host: str, ns: str | None = None, **kw: Any) -> dict[str, Any]:
        argv = [sys.executable, HELPER, "probe", kind, "--host", host]
        for k, v in kw.items():
            if v is True:
                argv.append(f"--{k}")
            else:
                argv += [f"--{k}", str(v)]
        out = sh("ip", "netns", "exec", ns or self.phone, *argv)
        result: dict[str, Any] = json.loads(out.stdout)
        return result

    def internet_events(self) -> list[dict[str, Any]]:
        if not self.log.exists():
            return []
        return [json.loads(x) for x in self.log.read_text().splitlines()]

    def nft(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return sh("ip", "netns", "exec", self.gw, "nft", *args, check=check)

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
            try:
                proc.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        self.net.close()


def mmtls_hello() -> bytes:
    """An MMTLS ClientHello-shaped record: type 0x16, version f1 04, length, body."""
    body = bytes.fromhex("0100002c0103f104") + bytes(range(36))
    return b"\x16\xf1\x04" + len(body).to_bytes(2, "big") + body


def tls_client_hello(server_name: str) -> bytes:
    """A real TLS ClientHello (from Python's ssl module) carrying ``server_name``."""
    import ssl

    ctx = ssl.create_default_context()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname=server_name)
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outgoing.read()


def big_client_hello(server_name: str, size: int = 6000) -> bytes:
    """A TLS 1.3-shaped ClientHello of about ``size`` bytes (a padding extension, as
    post-quantum key shares make real ones ~1.8 KiB): larger than the old 4 KiB peek."""
    name = server_name.encode()
    sni = b"\x00" + len(name).to_bytes(2, "big") + name
    sni = (len(sni)).to_bytes(2, "big") + sni
    ext = b"\x00\x00" + len(sni).to_bytes(2, "big") + sni
    pad = max(0, size - 100)
    ext += b"\x00\x15" + pad.to_bytes(2, "big") + bytes(pad)
    body = b"\x03\x03" + bytes(32) + b"\x00" + b"\x00\x02\x13\x01" + b"\x01\x00"
    body += len(ext).to_bytes(2, "big") + ext
    hs = b"\x01" + len(body).to_bytes(3, "big") + body
    return b"\x16\x03\x01" + len(hs).to_bytes(2, "big") + hs
