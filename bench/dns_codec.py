"""wxnet's DNS reader (:mod:`wxnet.proto.dnswire`) against dnspython and dnslib reading
the gateway's upstream answers into what the gateway uses: the question name and the
A/AAAA/CNAME records with owner, value and TTL.

    .venv/bin/python -m bench.dns_codec [--rounds 11] [--calls 20000]

The answers are the shapes the gateway forwards (built once with dnspython): one A
record; a CNAME to a CDN name with two A records; a CNAME chain of two with an A and an
AAAA record; an NXDOMAIN with an SOA in the authority section. Each reader runs
``--calls`` times over the mix per round, rounds alternate between the readers, and the
median microseconds per answer are printed with the ratios to ours.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
from dnslib import DNSRecord

from wxnet.proto.dnswire import answer_chain, parse_query

Parsed = tuple[str, list[tuple[str, int, str, int]]]


def answers() -> list[tuple[bytes, bytes]]:
    """(query, answer) pairs of the shapes above."""
    out: list[tuple[bytes, bytes]] = []

    def add(
        name: str,
        qtype: str,
        rrs: list[tuple[str, str, str]],
        rcode: dns.rcode.Rcode = dns.rcode.NOERROR,
    ) -> None:
        q = dns.message.make_query(name, qtype)
        r = dns.message.make_response(q)
        r.set_rcode(rcode)
        for owner, rt, value in rrs:
            section = r.authority if rt == "SOA" else r.answer
            section.append(dns.rrset.from_text(owner, 300, "IN", rt, value))
        out.append((q.to_wire(), r.to_wire()))

    add("short.weixin.qq.com.", "A", [("short.weixin.qq.com.", "A", "203.205.239.12")])
    add(
        "szextshort.weixin.qq.com.",
        "A",
        [
            ("szextshort.weixin.qq.com.", "CNAME", "extshort.wx.cdn.example."),
            ("extshort.wx.cdn.example.", "A", "203.0.113.10"),
            ("extshort.wx.cdn.example.", "A", "203.0.113.11"),
        ],
    )
    add(
        "video.example.com.",
        "AAAA",
        [
            ("video.example.com.", "CNAME", "video.edge.example.net."),
            ("video.edge.example.net.", "CNAME", "e1.edge.example.net."),
            ("e1.edge.example.net.", "A", "198.51.100.7"),
            ("e1.edge.example.net.", "AAAA", "2001:db8::7"),
        ],
    )
    soa = "ns.example.com. admin.example.com. 1 7200 900 1209600 300"
    add("missing.example.com.", "A", [("example.com.", "SOA", soa)], rcode=dns.rcode.NXDOMAIN)
    return out


def ours(query: bytes, data: bytes) -> Parsed:
    q = parse_query(query)  # done once per query by the filter before it forwards
    _qid, _flags, name, records = answer_chain(data, query, q.end, q.name)
    return name, [(r.owner, r.rtype, r.value, r.ttl) for r in records]


_KEEP_PY = {dns.rdatatype.A, dns.rdatatype.AAAA, dns.rdatatype.CNAME}


def dnspython(query: bytes, data: bytes) -> Parsed:
    m = dns.message.from_wire(data)
    name = m.question[0].name.to_text(omit_final_dot=True).lower()
    out: list[tuple[str, int, str, int]] = []
    for rrset in m.answer:
        if rrset.rdtype not in _KEEP_PY:
            continue
        owner = rrset.name.to_text(omit_final_dot=True).lower()
        for rd in rrset:
            value = (
                rd.target.to_text(omit_final_dot=True).lower()
                if rrset.rdtype == dns.rdatatype.CNAME
                else rd.address
            )
            out.append((owner, int(rrset.rdtype), value, rrset.ttl))
    return name, out


def dnslib(query: bytes, data: bytes) -> Parsed:
    m = DNSRecord.parse(data)
    name = str(m.q.qname).rstrip(".").lower()
    out: list[tuple[str, int, str, int]] = []
    for rr in m.rr:
        if rr.rtype in (1, 5, 28):
            value = str(rr.rdata).rstrip(".").lower() if rr.rtype == 5 else str(rr.rdata)
            out.append((str(rr.rname).rstrip(".").lower(), rr.rtype, value, rr.ttl))
    return name, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=11)
    ap.add_argument("--calls", type=int, default=20000)
    args = ap.parse_args()
    mix = answers()
    readers: dict[str, Callable[[bytes, bytes], Parsed]] = {
        "wxnet.proto.dnswire": ours,
        "dnspython": dnspython,
        "dnslib": dnslib,
    }
    for query, data in mix:  # all three must read the same thing
        results = {name: fn(query, data) for name, fn in readers.items()}
        assert len({repr(r) for r in results.values()}) == 1, results
    per = args.calls // len(mix)
    times: dict[str, list[float]] = {name: [] for name in readers}
    for _ in range(args.rounds):
        for name, fn in readers.items():
            t0 = time.perf_counter()
            for _ in range(per):
                for query, data in mix:
                    fn(query, data)
            times[name].append((time.perf_counter() - t0) / (per * len(mix)) * 1e6)
    base = statistics.median(times["wxnet.proto.dnswire"])
    print(f"load average {os.getloadavg()[0]:.1f}; {args.rounds} rounds of {per * len(mix)}")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"{name:22s} {med:7.2f} us per answer  {med / base:6.1f} x ours")


if __name__ == "__main__":
    main()
