"""The hand-written sync-item encoder (:mod:`wxnet.sync.items`) against protobuf doing
the same job (decode each stored item, set key and seq, serialise the response).

    .venv/bin/python -m bench.sync_items [--items 100] [--rounds 11]

Prints the median microseconds per ``NewSyncResponse`` page for both, measured
alternately in the same run, and their ratio.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

from wxnet.proto import wxnet_pb2 as pb
from wxnet.sync.items import Item, newsync_response, stored


def page(n: int) -> list[Item]:
    out: list[Item] = []
    for i in range(n):
        item = pb.CmdItem(
            cmd_id=5,
            key=2,
            seq=1000 + i,
            add_msg=pb.AddMsg(
                msg_id=10**9 + i,
                from_user="alice",
                to_user="bob",
                msg_type=1,
                content="hello there " * 3,
                create_time=1_700_000_000,
                client_msg_id=f"c{i}",
            ),
        )
        out.append((item.key, item.seq, stored(item)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=11)
    ap.add_argument("--calls", type=int, default=300)
    args = ap.parse_args()
    items = page(args.items)
    key = b"\x0a\x04\x08\x02\x10\x05" * 3

    def hand() -> bytes:
        return newsync_response(items, key, 0)

    def protobuf() -> bytes:
        resp = pb.NewSyncResponse(base=pb.BaseResponse(), key_buf=key)
        for k, s, body in items:
            ci = resp.cmd_list.add()
            ci.ParseFromString(body)
            ci.key, ci.seq = k, s
        return resp.SerializeToString()

    assert pb.NewSyncResponse.FromString(hand()) == pb.NewSyncResponse.FromString(protobuf())
    fns: dict[str, Callable[[], bytes]] = {"hand": hand, "protobuf": protobuf}
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(args.rounds):
        for name, fn in fns.items():  # alternate A/B in every round
            t0 = time.perf_counter()
            for _ in range(args.calls):
                fn()
            times[name].append((time.perf_counter() - t0) / args.calls * 1e6)
    med = {name: statistics.median(v) for name, v in times.items()}
    print(f"load average {os.getloadavg()[0]:.2f}; {args.items} items per page")
    for name, v in med.items():
        print(f"{name:9s} {v:8.1f} us per page")
    print(f"protobuf / hand: {med['protobuf'] / med['hand']:.2f}")


if __name__ == "__main__":
    main()
