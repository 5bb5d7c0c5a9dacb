"""``--jobs N``: flows sharded across worker processes give the output of one process."""

from __future__ import annotations

import io
import ipaddress
import struct
from pathlib import Path

import pytest

from wxnet.analyze import Analyzer, CaptureReader, FlowRecord
from wxnet.analyze import synth as S
from wxnet.analyze.engine import _shard_hash
from wxnet.analyze.parallel import run_parallel
from wxnet.classify import Classifier
from wxnet.cli.common import IO
from wxnet.cli.main import run

CAPTURES = Path(__file__).parent.parent / "data" / "captures"


def call(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = run(list(argv), IO(out, err))
    return code, out.getvalue(), err.getvalue()


def _no_rate(text: str) -> str:
    """The report without the processing time and rate (they differ run to run)."""
    return "\n".join(line.split("; ")[0] for line in text.splitlines())


def shard_of(a: str, b: str, ap: int, bp: int, shards: int) -> int:
    x = int(ipaddress.ip_address(a)) ^ int(ipaddress.ip_address(b))
    return _shard_hash(x, ap ^ bp, shards)


def dns_pair(name: str, addr: str) -> tuple[bytes, bytes]:
    qname = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    question = qname + b"\x00\x01\x00\x01"
    query = struct.pack(">HHHHHH", 9, 0x0100, 1, 0, 0, 0) + question
    rr = b"\xc0\x0c" + struct.pack(">HHIH", 1, 1, 120, 4) + bytes(int(x) for x in addr.split("."))
    return query, struct.pack(">HHHHHH", 9, 0x8180, 1, 1, 0, 0) + question + rr


def _dns_capture(path: Path) -> None:
    """A DNS answer for a WeChat name, then flows to that address with no payload
    evidence (labelled by DNS alone): some in another shard than the DNS flow, some
    idle long enough to be swept, plus non-IP and malformed frames."""
    client, resolver, server = "10.0.0.2", "10.0.0.1", "198.51.100.7"
    query, answer = dns_pair("long.weixin.qq.com", server)
    dns_shard = shard_of(client, resolver, 5555, 53, 2)
    other = [p for p in range(40000, 40100) if shard_of(client, server, p, 8080, 2) != dns_shard]
    same = [p for p in range(40000, 40100) if shard_of(client, server, p, 8080, 2) == dns_shard]
    frames: list[tuple[float, bytes]] = [
        (0.0, S.ether(S.ip(client, resolver, 17, S.udp(5555, 53, query)))),
        (0.1, S.ether(S.ip(resolver, client, 17, S.udp(53, 5555, answer)))),
        (0.2, bytes(12) + b"\x08\x06" + bytes(28)),  # ARP: no flow
        (0.3, S.ether(S.ip(client, server, 6, S.tcp(1, 2, 0, 0, S.ACK)))[:40]),  # cut short
    ]
    t = 1.0
    for port in other[:4] + same[:4]:
        for f in (
            S.ip(client, server, 6, S.tcp(port, 8080, 1000, 0, S.SYN)),
            S.ip(server, client, 6, S.tcp(8080, port, 5000, 1001, S.SYN | S.ACK)),
            S.ip(client, server, 6, S.tcp(port, 8080, 1001, 5001, S.ACK, b"\x99" * 30)),
            S.ip(client, server, 6, S.tcp(port, 8080, 1031, 5001, S.FIN | S.ACK)),
            S.ip(server, client, 6, S.tcp(8080, port, 5001, 1032, S.FIN | S.ACK)),
        ):
            frames.append((t, S.ether(f)))
            t += 2.0  # ended flows are swept and emitted mid-capture, at sweep times
    frames.append((t, S.ether(S.ip(client, "192.0.2.9", 1, b"\x08\0" + bytes(10)))))  # ICMP
    path.write_bytes(S.pcap_header(1) + b"".join(S.pcap_record(ts, f) for ts, f in frames))


def test_dns_answers_reach_every_worker(tmp_path: Path) -> None:
    path = tmp_path / "dns.pcap"
    _dns_capture(path)
    one: list[FlowRecord] = []
    a = Analyzer(one.append)
    with open(path, "rb") as f:
        reader = CaptureReader(f)
        a.run(reader)
        reader.close()
    a.finish()
    two: list[FlowRecord] = []
    stats, error = run_parallel(path, Classifier(), 2, two.append)
    assert error is None
    tcp = [r for r in one if r.transport == "tcp"]
    assert len(tcp) == 8 and all(r.verdict.app == "wechat" for r in tcp)
    assert all([e.kind for e in r.verdict.evidence] == ["dns"] for r in tcp)
    assert list(map(repr, two)) == list(map(repr, one))
    for name in (
        "packets",
        "bytes",
        "flows",
        "max_live_flows",
        "dns_answers",
        "malformed",
        "not_ip",
        "other_transport",
        "first_ts",
        "last_ts",
    ):
        assert getattr(stats, name) == getattr(a.stats, name), name


@pytest.mark.parametrize("capture", ["quickplay.pcap", "1kxun.pcap.gz", "youtubeupload.pcap"])
@pytest.mark.parametrize("jobs", ["2", "3"])
def test_jobs_output_is_identical(capture: str, jobs: str) -> None:
    path = str(CAPTURES / capture)
    code1, json1, _ = call("analyze", "--json", path)
    code2, json2, _ = call("analyze", "--json", "--jobs", jobs, path)
    assert code1 == code2 == 0 and json1 and json2 == json1
    code1, text1, _ = call("analyze", path)
    code2, text2, _ = call("analyze", "--jobs", jobs, path)
    assert code1 == code2 == 0 and "Summary by application" in text1
    assert _no_rate(text2) == _no_rate(text1)
    # --summary alone: the workers send their sums, not their records.
    code1, text1, _ = call("analyze", "--summary", path)
    code2, text2, _ = call("analyze", "--summary", "--jobs", jobs, path)
    assert code1 == code2 == 0 and "Summary by application" in text1
    assert _no_rate(text2) == _no_rate(text1)


def _tie_capture(path: Path, first_shard: int) -> None:
    """Two unknown flows, one with http-host and one with tls-sni as first evidence (a
    tie in the "unknown" row); the first one emitted is in shard ``first_shard`` of 2."""
    client, server = "10.0.0.2", "192.0.2.80"
    http = b"GET / HTTP/1.1\r\nHost: www.example.org\r\n\r\n"
    tls = S.tls_client_hello("www.example.net")
    want = [first_shard, 1 - first_shard]
    frames: list[tuple[float, bytes]] = []
    t = 1.0
    for k, (sport, payload) in enumerate([(80, http), (443, tls)]):
        port = next(
            p for p in range(41000, 42000) if shard_of(client, server, p, sport, 2) == want[k]
        )
        for f in (
            S.ip(client, server, 6, S.tcp(port, sport, 1000, 0, S.SYN)),
            S.ip(server, client, 6, S.tcp(sport, port, 5000, 1001, S.SYN | S.ACK)),
            S.ip(client, server, 6, S.tcp(port, sport, 1001, 5001, S.ACK, payload)),
            S.ip(client, server, 6, S.tcp(port, sport, 1001 + len(payload), 5001, S.FIN | S.ACK)),
            S.ip(server, client, 6, S.tcp(sport, port, 5001, 1002 + len(payload), S.FIN | S.ACK)),
        ):
            frames.append((t, S.ether(f)))
            t += 1.0
        t += 30.0  # the first flow is swept (and emitted) before the second starts
    path.write_bytes(S.pcap_header(1) + b"".join(S.pcap_record(ts, f) for ts, f in frames))


@pytest.mark.parametrize("first_shard", [0, 1])
def test_summary_folds_keep_the_order_of_evidence_ties(tmp_path: Path, first_shard: int) -> None:
    """Rows whose evidence kinds tie on count print them in the order one process first
    met them: the folded workers' sums must rebuild that order, and --app must filter
    the same way."""
    tie = tmp_path / "tie.pcap"
    _tie_capture(tie, first_shard)
    code1, text1, _ = call("analyze", "--summary", str(tie))
    code2, text2, _ = call("analyze", "--summary", "--jobs", "2", str(tie))
    assert code1 == code2 == 0 and "http-host 1, tls-sni 1" in text1
    assert _no_rate(text2) == _no_rate(text1)
    path = tmp_path / "dns.pcap"
    _dns_capture(path)
    for extra in ([], ["--app", "wechat"], ["--app", "unknown"]):
        code1, text1, _ = call("analyze", "--summary", *extra, str(path))
        code2, text2, _ = call("analyze", "--summary", "--jobs", "2", *extra, str(path))
        assert code1 == code2 == 0 and "Summary by application" in text1
        assert _no_rate(text2) == _no_rate(text1)
    dev = [str(CAPTURES / c) for c in ("quickplay.pcap", "1kxun.pcap.gz")]
    for capture in dev:
        code1, text1, _ = call("analyze", "--summary", capture)
        code3, text3, _ = call("analyze", "--summary", "--jobs", "3", capture)
        assert code1 == code3 == 0 and _no_rate(text3) == _no_rate(text1)


def test_jobs_on_a_truncated_capture_report_the_same_error(tmp_path: Path) -> None:
    data = (CAPTURES / "quickplay.pcap").read_bytes()
    path = tmp_path / "cut.pcap"
    path.write_bytes(data[: len(data) // 2])
    code1, out1, err1 = call("analyze", "--json", str(path))
    code2, out2, err2 = call("analyze", "--json", "--jobs", "2", str(path))
    assert code1 == code2 == 1 and out2 == out1 and err2 == err1 and "at byte offset" in err1


def test_bad_jobs_value_is_a_usage_error() -> None:
    code, _, _ = call("analyze", "--jobs", "-1", str(CAPTURES / "quickplay.pcap"))
    assert code == 2
