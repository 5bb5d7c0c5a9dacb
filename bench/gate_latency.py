"""The inspector's added connection-setup latency.

From the phone: connect, send an MMTLS-shaped hello, wait for the echo; N times each
for (1) no gateway table, (2) the policy loaded with the address already in the
WeChat set (kernel path), (3) the policy loaded and a fresh unknown address each time
(nftables redirect -> inspector peek -> classify -> connect upstream -> splice).
Prints a Markdown table of medians and 95th percentiles.

Usage (root): python -m bench.gate_latency [--count 200]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import sys
import time

from bench.gate_world import GW_LAN, WECHAT, World, machine

HELLO = b"\x16\xf1\x04\x00\x2c" + bytes.fromhex("0100002c0103f104") + bytes(range(36))
RESOLVE = (
    "import sys; from dnslib import DNSRecord;"
    "print(DNSRecord.parse(DNSRecord.question(sys.argv[1]).send(sys.argv[2], 53, timeout=3)))"
)


def echo_server() -> None:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.close()

    async def main() -> None:
        await asyncio.start_server(echo, "0.0.0.0", 8080, backlog=1024)
        print("ready", flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())


def connect_times(addresses: list[str]) -> list[float]:
    out = []
    for addr in addresses:
        t0 = time.perf_counter()
        with socket.create_connection((addr, 8080), timeout=5) as s:
            s.sendall(HELLO)
            got = b""
            while len(got) < len(HELLO):
                chunk = s.recv(65536)
                if not chunk:
                    raise ConnectionError(f"{addr}: closed after {len(got)} bytes")
                got += chunk
        out.append((time.perf_counter() - t0) * 1000)
    return out


def measure(world: World, addresses: list[str]) -> list[float]:
    raw = world.run(world.phone, sys.executable, "-m", "bench.gate_latency", "--client", *addresses)
    times: list[float] = json.loads(raw)
    return times


def p95(xs: list[float]) -> float:
    return sorted(xs)[max(0, int(len(xs) * 0.95) - 1)]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=200)
    ap.add_argument("--client", nargs="*")
    ap.add_argument("--server", action="store_true")
    args = ap.parse_args()
    if args.server:
        echo_server()
        return
    if args.client is not None:
        print(json.dumps(connect_times(args.client)))
        return
    n = args.count
    fresh = [f"198.18.{5 + i // 250}.{1 + i % 250}" for i in range(n)]
    res: dict[str, list[float]] = {}
    with World() as w:
        for k in range((n + 249) // 250):
            w.run(w.inet, "ip", "addr", "add", f"198.18.{5 + k}.0/24", "dev", "lo")
        srv = w.spawn(w.inet, sys.executable, "-m", "bench.gate_latency", "--server")
        assert srv.stdout is not None and srv.stdout.readline().strip() == "ready"
        w.start_upstream_dnsmasq()
        res["no gateway table"] = measure(w, [WECHAT] * n)
        gate = w.start_gate()
        assert WECHAT in w.run(
            w.phone, sys.executable, "-c", RESOLVE, "short.weixin.qq.com", GW_LAN
        )
        res["policy, address in the set (kernel path)"] = measure(w, [WECHAT] * n)
        res["policy, unknown address (inspector path)"] = measure(w, fresh)
        w.stop(gate)
    print(f"machine: {machine()}")
    print("| connect + 49-byte hello + echo, sequential | median ms | p95 ms |")
    print("|---|---|---|")
    for what, xs in res.items():
        print(f"| {what} (n={len(xs)}) | {statistics.median(xs):.3f} | {p95(xs):.3f} |")
    kernel = statistics.median(res["policy, address in the set (kernel path)"])
    insp = statistics.median(res["policy, unknown address (inspector path)"])
    print(f"inspector adds {insp - kernel:.3f} ms (median) to connection setup")


if __name__ == "__main__":
    main()
