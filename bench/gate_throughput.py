"""iperf3 through the gateway namespace: policy loaded (allow-only, WeChat address in
the set, port 8080) vs plain forwarding (no table). Prints a Markdown row.

Usage (root): python -m bench.gate_throughput [--seconds 5] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys

from bench.gate_world import GW_LAN, WECHAT, World, machine, need

RESOLVE = (
    "import sys; from dnslib import DNSRecord;"
    "print(DNSRecord.parse(DNSRecord.question(sys.argv[1]).send(sys.argv[2], 53, timeout=3)))"
)


#: What a typical router already runs: stateful forward filter plus a NAT hook.
ROUTER = """table inet {t} {{
    chain rt_forward {{
        type filter hook forward priority filter; policy accept;
        ct state established,related accept
        ct state invalid drop
    }}
    chain rt_nat {{
        type nat hook prerouting priority dstnat; policy accept;
    }}
}}
"""


def iperf(world: World, seconds: int, reverse: bool) -> float:
    argv = ["iperf3", "-c", WECHAT, "-p", "8080", "-t", str(seconds), "-J"]
    if reverse:
        argv.append("-R")
    out = json.loads(world.run(world.phone, *argv))
    return float(out["end"]["sum_received"]["bits_per_second"]) / 1e9


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    need(("iperf3", "iperf3"))
    plain: list[float] = []
    router: list[float] = []
    policy: list[float] = []
    with World() as w:
        w.spawn(w.inet, "iperf3", "-s", "-B", WECHAT, "-p", "8080")
        w.wait_listen(w.inet, f"{WECHAT}:8080")
        w.start_upstream_dnsmasq()

        def plain_round() -> None:
            plain.append(iperf(w, args.seconds, False))

        def router_round() -> None:
            base = f"{w.table}base"
            w.run(w.gw, "nft", "-f", "-", input_text=ROUTER.format(t=base))
            router.append(iperf(w, args.seconds, False))
            w.run(w.gw, "nft", "delete", "table", "inet", base)

        def policy_round() -> None:
            gate = w.start_gate()
            answer = w.run(w.phone, sys.executable, "-c", RESOLVE, "sgshort.wechat.com", GW_LAN)
            assert WECHAT in answer, answer
            policy.append(iperf(w, args.seconds, False))
            w.stop(gate)

        order = [plain_round, router_round, policy_round]
        for i in range(args.rounds):  # A B C, then C B A: no case always runs last
            for step in order if i % 2 == 0 else order[::-1]:
                step()
    p, r, q = (statistics.median(x) for x in (plain, router, policy))
    print(f"machine: {machine()}")
    print("| iperf3 TCP through the gateway (median) | Gbit/s | policy / this |")
    print("|---|---|---|")
    print(f"| plain forwarding, no netfilter | {p:.2f} | {q / p:.3f} |")
    print(f"| stateful router table (conntrack + NAT hook) | {r:.2f} | {q / r:.3f} |")
    print(f"| wxnet policy loaded (allow-only, flow in the kernel path) | {q:.2f} | 1 |")
    print(
        f"{args.rounds} rounds x {args.seconds}s; raw Gbit/s: "
        f"plain={plain} router={router} policy={policy}"
    )
    ratios = [round(b / a, 3) for a, b in zip(plain, policy, strict=True)]
    print(f"per-round policy / plain: {ratios} (median {statistics.median(ratios):.3f})")


if __name__ == "__main__":
    main()
