"""DNS filter queries per second (dnsperf from the phone namespace) vs dnsmasq doing
the same forwarding on the same machine. Prints Markdown rows.

Both forward to the same upstream (a dnsmasq in the "internet" namespace answering
from its own table). wxnet: allow-only policy, so allowed names are forwarded and their
addresses added to the nftables sets; other names are answered NXDOMAIN locally. wxnet
runs once with one process (``dns-workers = 1``) and once with ``--workers`` processes
sharing the port. dnsmasq: a plain forwarder, without cache (same work as wxnet) and
with its cache. dnsperf sends from ``--clients`` sockets (as many phones would), so
``SO_REUSEPORT`` can spread them over the wxnet processes; dnsmasq gets the same load.

Usage (root): python -m bench.gate_dns [--seconds 5] [--rounds 3] [--workers 2]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics

from bench.gate_world import GW_LAN, World, machine, need

ALLOWED = [f"n{i}.weixin.qq.com" for i in range(50)] + [f"s{i}.wechat.com" for i in range(50)]
OTHER = [f"site{i}.example" for i in range(100)]


def dnsperf(world: World, names: list[str], seconds: int, clients: int, tag: str) -> float:
    qfile = world.tmp / f"{tag}.txt"
    qfile.write_text("".join(f"{n} A\n" for n in names))
    out = world.run(
        world.phone, "dnsperf", "-s", GW_LAN, "-d", str(qfile), "-l", str(seconds), "-q", "200",
        "-c", str(clients),
    )  # fmt: skip
    m = re.search(r"Queries per second:\s+([\d.]+)", out)
    lost = re.search(r"Queries lost:\s+(\d+)", out)
    if m is None:
        raise RuntimeError(out)
    print(f"  {tag}: {m.group(1)} q/s, lost {lost.group(1) if lost else '?'}", flush=True)
    return float(m.group(1))


def dnsmasq(world: World, cache: int) -> None:
    conf = world.tmp / f"fwd{cache}.conf"
    conf.write_text(
        "no-resolv\nno-hosts\nbind-interfaces\n"
        f"listen-address={GW_LAN}\nport=53\nserver=198.18.1.53\ncache-size={cache}\n"
    )
    world.spawn(world.gw, "dnsmasq", "-k", "-C", str(conf), "--pid-file=", "--user=root")
    world.wait_listen(world.gw, f"{GW_LAN}:53", udp=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2, help="dns-workers of the second wxnet run")
    ap.add_argument("--clients", type=int, default=8, help="dnsperf -c (sockets)")
    args = ap.parse_args()
    need(("dnsperf", "dnsperf"), ("dnsmasq-base", "dnsmasq"))
    runs: dict[str, list[float]] = {}
    mixes = (("allowed", ALLOWED), ("other", OTHER))
    with World() as w:
        w.start_upstream_dnsmasq()
        for rnd in range(args.rounds):  # interleaved, so load changes hit all alike
            print(f"round {rnd + 1}, load average {os.getloadavg()[0]:.1f}", flush=True)
            for workers in (1, args.workers):
                gate = w.start_gate(dns_workers=workers)
                for mix, names in mixes:
                    runs.setdefault(f"wxnet{workers} {mix}", []).append(
                        dnsperf(w, names, args.seconds, args.clients, f"wxnet{workers}-{mix}")
                    )
                w.stop(gate)
            for cache in (0, 10000):
                dnsmasq(w, cache)
                for mix, names in mixes:
                    runs.setdefault(f"dnsmasq{cache} {mix}", []).append(
                        dnsperf(w, names, args.seconds, args.clients, f"dm{cache}-{mix}")
                    )
                p = w.procs.pop()
                p.terminate()
                p.communicate(timeout=10)
    res = {k: statistics.median(v) for k, v in runs.items()}
    print(f"machine: {machine()}")
    print(f"{args.rounds} interleaved rounds x {args.seconds}s, medians; dnsperf -c {args.clients}")
    print("| queries (dnsperf, 200 outstanding) | wxnet processes | wxnet q/s "
          "| dnsmasq no cache q/s | ratio | dnsmasq cached q/s | ratio |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for mix, what in (("allowed", "allowed names (forwarded, set filled)"),
                      ("other", "names outside the policy (NXDOMAIN)")):  # fmt: skip
        d0, d1 = res[f"dnsmasq0 {mix}"], res[f"dnsmasq10000 {mix}"]
        for workers in (1, args.workers):
            g = res[f"wxnet{workers} {mix}"]
            print(f"| {what} | {workers} | {g:.0f} | {d0:.0f} | {g / d0:.2f} | {d1:.0f} "
                  f"| {g / d1:.2f} |")  # fmt: skip
    print("per-round ratios to dnsmasq without cache (same round), median [range]:")
    for mix, _ in mixes:
        for workers in (1, args.workers):
            pairs = zip(runs[f"wxnet{workers} {mix}"], runs[f"dnsmasq0 {mix}"], strict=True)
            r = [g / d for g, d in pairs]
            print(f"  {mix}, {workers} process(es): {statistics.median(r):.2f} "
                  f"[{min(r):.2f}-{max(r):.2f}]")  # fmt: skip
    for key, vals in sorted(runs.items()):
        print(f"  {key}: " + ", ".join(f"{v:.0f}" for v in vals))


if __name__ == "__main__":
    main()
