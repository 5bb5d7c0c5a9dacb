"""CPU time per DNS query of the gateway's DNS path, in process (no sockets, no kernel).

Runs :meth:`GateService.query` and :meth:`GateService.answered` (decision, answer chain,
per-group attestation, set elements, learned answer, flow record to the JSON-lines log)
over real DNS messages: the 100 WeChat names of ``bench.gate_dns`` with an upstream-style
answer each (forwarded), and 100 names outside the policy (NXDOMAIN). Prints CPU
microseconds per query (``time.process_time``), median of ``--rounds``.

To compare two versions of the code in the same run, alternate them, e.g.
``PYTHONPATH=/tmp/old/src python -m bench.gate_dns_cpu`` and the same without it.
``--profile`` prints a cProfile of the forwarded path instead.

Usage: python -m bench.gate_dns_cpu [--queries 20000] [--rounds 5] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import statistics
import struct
import tempfile
import time
from pathlib import Path

from wxnet.classify import Classifier
from wxnet.gate.apps import app_catalog
from wxnet.gate.dnsfilter import Forward
from wxnet.gate.policy import parse_policy
from wxnet.gate.service import GateService

ALLOWED = [f"n{i}.weixin.qq.com" for i in range(50)] + [f"s{i}.wechat.com" for i in range(50)]
OTHER = [f"site{i}.example" for i in range(100)]
CLIENT = "10.77.0.2"

POLICY = """\
[gate]
lan = ["lan0"]
upstreams = ["192.0.2.53"]
log = "{log}"

[groups.staff]
mode = "allow-only"
apps = ["wechat"]

[[devices]]
name = "phone"
subnet = "10.77.0.0/24"
group = "staff"
"""


def query(name: str, qid: int) -> bytes:
    qname = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    return struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + qname + struct.pack("!HH", 1, 1)


def answer(q: bytes, address: str) -> bytes:
    """The upstream's reply: the question and one A record (name by pointer)."""
    head = struct.pack("!HHHHHH", int.from_bytes(q[:2], "big"), 0x8180, 1, 1, 0, 0)
    rr = struct.pack("!HHHIH", 0xC00C, 1, 1, 300, 4) + bytes(int(b) for b in address.split("."))
    return head + q[12:] + rr


def run(service: GateService, n: int, forwarded: bool) -> float:
    names = ALLOWED if forwarded else OTHER
    msgs = [query(name, i + 1) for i, name in enumerate(names)]
    answers = [answer(m, f"198.18.2.{i % 250 + 1}") for i, m in enumerate(msgs)]
    t0 = time.process_time()
    for i in range(n):
        k = i % len(msgs)
        act = service.query(msgs[k], CLIENT, 40000 + k, "udp")
        if isinstance(act, Forward):
            service.answered(act, answers[k])
    return (time.process_time() - t0) / n * 1e6


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--queries", type=int, default=20000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    classifier = Classifier()
    with tempfile.TemporaryDirectory() as tmp:
        text = POLICY.format(log=Path(tmp) / "gate.jsonl")
        policy = parse_policy(text, app_catalog(classifier.apps()))
        now = [time.time()]
        service = GateService(policy, classifier, clock=lambda: now[0])
        run(service, 2000, True)  # warm the caches (group lookups, names)
        if args.profile:
            prof = cProfile.Profile()
            prof.runcall(run, service, args.queries, True)
            pstats.Stats(prof).sort_stats("tottime").print_stats(25)
            return
        fwd, nx = [], []
        for _ in range(args.rounds):
            fwd.append(run(service, args.queries, True))
            nx.append(run(service, args.queries, False))
        service.sink.close()
    print(
        f"forwarded {statistics.median(fwd):.1f} us/query [{min(fwd):.1f}-{max(fwd):.1f}], "
        f"NXDOMAIN {statistics.median(nx):.1f} us/query [{min(nx):.1f}-{max(nx):.1f}], "
        f"load average {os.getloadavg()[0]:.1f}"
    )


if __name__ == "__main__":
    main()
