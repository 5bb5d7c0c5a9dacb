"""Shared set-up for the gateway benchmarks: phone -- gateway -- internet namespaces.

Run the ``bench/gate_*.py`` scripts as root (``python -m bench.gate_throughput``...);
each installs the Debian tools it needs (iperf3, dnsmasq-base, dnsperf) if missing.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from wxnet.netns import Netns, new_suffix

PHONE, GW_LAN, GW_WAN, INET = "10.77.0.2", "10.77.0.1", "198.18.0.1", "198.18.0.2"
UPSTREAM, WECHAT, WECHAT_HARDCODED = "198.18.1.53", "198.18.2.10", "198.18.2.20"

POLICY = """\
[gate]
lan = ["{lan}"]
upstreams = ["{upstream}"]
dns-listen = ["{gw}"]
table = "{table}"
log = "{tmp}/gate.jsonl"

[groups.staff]
mode = "allow-only"
apps = ["wechat"]

[[devices]]
name = "phone"
subnet = "10.77.0.0/24"
group = "staff"
"""


def sh(*cmd: str, check: bool = True, input_text: str | None = None) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, input=input_text)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {proc.stderr.strip()}")
    return proc.stdout


def need(*packages_and_tools: tuple[str, str]) -> None:
    """Install Debian packages whose tool is missing (the bench needs root anyway)."""
    missing = [pkg for pkg, tool in packages_and_tools if shutil.which(tool) is None]
    if missing:
        subprocess.run(["apt-get", "update", "-qq"], check=True)
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", *missing],
            check=True,
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
        )


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{cpu}, {os.cpu_count()} CPUs, Linux {platform.release()}, "
        f"Python {platform.python_version()}, {time.strftime('%Y-%m-%d', time.gmtime())}"
    )


class World:
    """Three namespaces with unique names; ``close`` removes them and every process."""

    def __init__(self) -> None:
        if os.geteuid() != 0:
            sys.exit("the gateway benchmarks need root (namespaces, nftables)")
        self.sfx = new_suffix()
        self.net = Netns()
        self.phone, self.gw, self.inet = (f"wxb{r}-{self.sfx}" for r in ("ph", "gw", "in"))
        self.lan_if = f"wxbl{self.sfx}"
        self.table = f"wxb{self.sfx}"
        self.tmp = Path(tempfile.mkdtemp(prefix="wxnet-bench-"))
        self.procs: list[subprocess.Popen[str]] = []

    def __enter__(self) -> World:
        s, net = self.sfx, self.net
        net.add(self.phone, self.gw, self.inet)
        net.veth(self.phone, f"wxbp{s}", self.gw, self.lan_if)
        net.veth(self.gw, f"wxbw{s}", self.inet, f"wxbi{s}")
        for ns, dev, addr in (
            (self.phone, f"wxbp{s}", f"{PHONE}/24"),
            (self.gw, self.lan_if, f"{GW_LAN}/24"),
            (self.gw, f"wxbw{s}", f"{GW_WAN}/24"),
            (self.inet, f"wxbi{s}", f"{INET}/24"),
        ):
            net.addr(ns, dev, addr)
            net.up(ns, dev)
        net.addr(self.inet, "lo", *(f"{a}/32" for a in (UPSTREAM, WECHAT, WECHAT_HARDCODED)))
        net.route(self.phone, "default", GW_LAN)
        net.route(self.gw, "default", INET)
        net.route(self.inet, "10.77.0.0/24", GW_WAN)
        net.forwarding(self.gw)
        return self

    def __exit__(self, *exc: object) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            p.communicate(timeout=10)
        self.net.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def spawn(self, ns: str, *argv: str) -> subprocess.Popen[str]:
        p = subprocess.Popen(
            Netns.exec_argv(ns, argv),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.procs.append(p)
        return p

    def run(self, ns: str, *argv: str, input_text: str | None = None) -> str:
        return sh("ip", "netns", "exec", ns, *argv, input_text=input_text)

    def start_gate(self, dns_workers: int = 1) -> subprocess.Popen[str]:
        cfg = self.tmp / "gate.toml"
        cfg.write_text(
            POLICY.format(
                lan=self.lan_if, upstream=UPSTREAM, gw=GW_LAN, table=self.table, tmp=self.tmp
            ).replace("[gate]\n", f"[gate]\ndns-workers = {dns_workers}\n")
        )
        p = self.spawn(self.gw, sys.executable, "-m", "wxnet", "gate", "run", str(cfg))
        assert p.stdout is not None
        line = p.stdout.readline()
        if not line.startswith("ready"):
            raise RuntimeError(f"gate did not start: {line} {p.stderr.read() if p.stderr else ''}")
        return p

    def stop(self, p: subprocess.Popen[str]) -> None:
        p.terminate()
        p.communicate(timeout=15)

    def start_upstream_dnsmasq(self) -> None:
        """An authoritative-style upstream in "internet": answers from its own table."""
        conf = self.tmp / "upstream.conf"
        conf.write_text(
            "no-resolv\nno-hosts\nbind-interfaces\n"
            f"listen-address={UPSTREAM}\nport=53\n"
            f"address=/weixin.qq.com/{WECHAT}\naddress=/wechat.com/{WECHAT}\n"
            "address=/example/198.18.3.10\n"
        )
        self.spawn(
            self.inet, "dnsmasq", "-k", "-C", str(conf), "--pid-file=", "--user=root", "-8", "-"
        )
        self.wait_listen(self.inet, f"{UPSTREAM}:53", udp=True)

    def wait_listen(self, ns: str, endpoint: str, udp: bool = False) -> None:
        """Wait (bounded) until something listens on ``endpoint`` in ``ns``."""
        deadline = time.monotonic() + 10
        while endpoint not in self.run(ns, "ss", "-lnu" if udp else "-lnt"):
            if time.monotonic() > deadline:
                raise RuntimeError(f"nothing listens on {endpoint} in {ns}")
            time.sleep(0.05)
