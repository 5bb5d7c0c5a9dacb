"""The lab for real: namespaces, nftables, wxnet serve and the lab's clients (root)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from wxnet.lab.expectations import assert_expectations
from wxnet.lab.faults import parse_case, short_matrix
from wxnet.lab.report import Report
from wxnet.lab.results import Link, Outcome, Source
from wxnet.lab.runner import LabConfig, run_lab
from wxnet.lab.topology import NETNS_ETC, Topology, new_run_id

pytestmark = pytest.mark.root

if os.geteuid() != 0:  # CI is root: there these tests always run
    pytest.skip("needs root (network namespaces, nftables)", allow_module_level=True)


def namespaces() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    return {line.split()[0] for line in out.stdout.splitlines() if line.strip()}


def ours(run_id: str) -> set[str]:
    return {ns for ns in namespaces() if ns.startswith(f"wxl{run_id}")}


LISTEN = """
import socket, sys, selectors
sel = selectors.DefaultSelector()
for port in (80, 8080, 14000):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port)); s.listen(16); sel.register(s, selectors.EVENT_READ)
print("ready", flush=True)
while True:
    for key, _ in sel.select():
        conn, _ = key.fileobj.accept(); conn.close()
"""

PROBE = """
import json, socket, sys
out = {}
for port in (80, 8080, 14000):
    try:
        socket.create_connection((sys.argv[1], port), 2).close(); out[str(port)] = True
    except OSError:
        out[str(port)] = False
try:
    socket.getaddrinfo("long.wxnet.lab", None, socket.AF_INET); out["dns"] = True
except OSError:
    out["dns"] = False
print(json.dumps(out))
"""


def test_faults_block_exactly_what_they_say(tmp_path: Path) -> None:
    with Topology.build(tmp_path) as topo:
        n, a = topo.names, topo.addr
        assert ours(n.run_id) == {n.phone, n.gateway, n.internet}
        listener = topo.spawn(n.internet, [sys.executable, "-c", LISTEN], "listen",
                              stdout=subprocess.PIPE)  # fmt: skip
        dns = topo.spawn(
            n.internet,
            [sys.executable, "-m", "wxnet.lab.dnsserver", "--listen", a.dns,
             "--record", f"long.wxnet.lab={a.smart[0]}"],
            "dns", stdout=subprocess.PIPE,
        )  # fmt: skip
        for proc in (listener, dns):
            assert proc.stdout is not None
            assert proc.stdout.readline().startswith(b"ready")
        for spec in ("none", "dns", "tcp80", "tcp8080+tcp14000", "alltcp"):
            case = parse_case(spec)
            topo.apply_case(case)
            out = topo.run(n.phone, [sys.executable, "-c", PROBE, a.smart[0]])
            got = json.loads(out.stdout)
            want = {str(p): not case.blocks_tcp(p) for p in (80, 8080, 14000)}
            want["dns"] = not case.blocks_dns()
            assert got == want, spec
        # the phone's only resolver is the lab's; the host's resolv.conf is untouched
        assert (NETNS_ETC / n.phone / "resolv.conf").read_text().startswith(f"nameserver {a.dns}")
    assert ours(n.run_id) == set()
    assert not (NETNS_ETC / n.phone).exists()
    assert listener.poll() is not None and dns.poll() is not None


def test_failed_build_leaves_nothing(tmp_path: Path) -> None:
    run_id = new_run_id()
    with Topology.build(tmp_path, run_id):
        # a second lab with the same names cannot be built, and cleans up only its own
        with pytest.raises(Exception, match="netns add"):
            Topology.build(tmp_path, run_id)
        assert len(ours(run_id)) == 3
    assert ours(run_id) == set()


def test_short_matrix_meets_the_seed(tmp_path: Path) -> None:
    """The lab's own client (wxnet.lab.probe) behaves as the seed saw the app behave."""
    cfg = LabConfig(short_matrix(), tmp_path, time_limit=15, messages=2, client="core")
    report = run_lab(cfg)
    assert ours(report.meta[1][1]) == set()
    assert_expectations(report.checks)  # S9, S12, S13, S14, no loss, no duplicate
    by_case = {r.case: r for r in report.results}
    assert (by_case["dns"].source, by_case["dns"].link) == (Source.BUILTIN, Link.LONG)
    assert by_case["tcp8080"].link is Link.SHORT and by_case["tcp8080"].port == 80
    assert by_case["tcp80+tcp8080"].port == 14000
    assert by_case["alltcp"].outcome is Outcome.FAILED and by_case["alltcp"].network_poor
    for r in report.results:
        assert r.seconds < 30, r
        if r.worked:
            assert r.first_delivery_s is not None and r.first_delivery_s < r.seconds
            assert (r.acked, r.received, r.peer_received) == (2, 2, 2) and r.image_ok


def test_with_gate_wechat_works_and_the_web_is_blocked(tmp_path: Path) -> None:
    """`wxnet lab --with-gate`: wxnet gate in allow-only mode on the gateway, the seed's
    names; the service still behaves as the seed saw, and a browser never gets through."""
    cases = [parse_case(c) for c in ("none", "dns", "tcp80+tcp8080")]
    cfg = LabConfig(
        cases, tmp_path, time_limit=15, messages=2, client="core", with_gate=True,
        long_name="long.weixin.qq.com", short_name="short.weixin.qq.com",
        dns_name="dns.weixin.qq.com",
    )  # fmt: skip
    report = run_lab(cfg)
    assert_expectations(report.checks)
    assert {c.claim for c in report.checks} >= {"S1", "S9", "S12", "S13"}
    assert all(r.gate and r.web_blocked for r in report.results)
    # the gate saw WeChat by DNS and by the bytes of the built-in-address flows (S9)
    log = (tmp_path / "gate.jsonl").read_text()
    assert '"app": "wechat"' in log and '"path": "inspector"' in log
    assert "www.example.lab" in log  # the browser's DNS query was refused


def test_sdk_behind_the_gate(tmp_path: Path) -> None:
    """wxnet's client SDK through wxnet gate: WeChat works (by DNS, by built-in
    addresses, by short links), the web site never does."""
    cases = [parse_case(c) for c in ("none", "dns", "tcp8080")]
    cfg = LabConfig(
        cases, tmp_path, time_limit=15, messages=2, client="sdk", with_gate=True,
        long_name="long.weixin.qq.com", short_name="short.weixin.qq.com",
        dns_name="dns.weixin.qq.com",
    )  # fmt: skip
    report = run_lab(cfg)
    assert_expectations(report.checks)
    by_case = {r.case: r for r in report.results}
    assert by_case["tcp8080"].link is Link.SHORT  # the gate keeps QQ's 14000 closed
    assert all(r.web_blocked for r in report.results)


@pytest.fixture(scope="module")
def sdk_report(tmp_path_factory: pytest.TempPathFactory) -> Report:
    """The short matrix with wxnet's client SDK as the phone (one run for the tests below)."""
    workdir = tmp_path_factory.mktemp("sdk-lab")
    return run_lab(LabConfig(short_matrix(), workdir, time_limit=15, messages=2, client="sdk"))


def test_sdk_meets_s9_s13_and_loses_nothing(sdk_report: Report) -> None:
    holding = [c for c in sdk_report.checks if c.claim in ("S9", "S13", "S16", "S19")]
    assert {c.claim for c in holding} == {"S9", "S13", "S16", "S19"}
    assert_expectations(holding)
    by_case = {r.case: r for r in sdk_report.results}
    assert by_case["none"].worked and by_case["none"].link is Link.LONG
    assert by_case["dns"].source in (Source.BUILTIN, Source.NEWGETDNS)
    assert by_case["alltcp"].network_poor and not by_case["alltcp"].worked
    assert all(r.seconds < 30 for r in sdk_report.results)
    # every case was a fresh install: nothing cached from an earlier case
    assert not any("cached newgetdns" in e for r in sdk_report.results for e in r.events)


def test_sdk_meets_every_expectation(sdk_report: Report) -> None:
    assert_expectations(sdk_report.checks)


def test_warm_sdk_uses_its_cached_newgetdns_list_without_dns(tmp_path: Path) -> None:
    """S9/S10: a restarted app whose DNS is cut uses the newgetdns list it cached."""
    cfg = LabConfig([parse_case("dns")], tmp_path, time_limit=15, messages=2, warm=True)
    report = run_lab(cfg)
    assert_expectations(report.checks)
    (r,) = report.results
    assert (r.source, r.link, r.port) == (Source.NEWGETDNS, Link.LONG, 8080)
    assert r.address in ("203.0.113.10", "203.0.113.11")  # the smart addresses it cached
    assert any("cached newgetdns list" in line for line in r.events)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_tears_everything_down(tmp_path: Path, sig: signal.Signals) -> None:
    with subprocess.Popen(
        [sys.executable, "-m", "wxnet", "lab", "--cases", "none,dns,tcp80,tcp8080",
         "--client", "core", "--out", str(tmp_path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    ) as proc:  # fmt: skip
        try:
            assert proc.stdout is not None and proc.stderr is not None
            head = proc.stdout.readline()  # "wxnet lab RUNID: ..."
            run_id = head.split()[2].rstrip(":")
            first_case = proc.stdout.readline()  # the lab is up and a case has run
            assert first_case.split()[0] == "none", (head, first_case)
            assert len(ours(run_id)) == 3
            proc.send_signal(sig)
            rc = proc.wait(60)
            err = proc.stderr.read()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert rc == 130
    assert ours(run_id) == set()
    assert not (NETNS_ETC / f"wxl{run_id}ph").exists()
    assert "interrupted" in err
