"""Does a login flood slow other users' image uploads? (issue 12: argon2 shared the
default thread pool with image work; 12 concurrent logins took another user's
image-chunk latency from 6.7 ms to 4.1 s.)

One server in this process (its own thread pool for password hashing, 1 worker and a
queue of 16 by default). A victim uploads 64 KiB image chunks one after the other;
rounds alternate between quiet, with ``--flooders`` clients logging in with the right
password as fast as the server answers (hashing on its own pool), and the same flood
with hashing on the default executor the image writes use (the design before issue 12,
the same-run baseline). Prints the median and p90 chunk latency of each, the ratios,
the logins answered and refused with ERR_BUSY, and the load average.

    python -m bench.login_isolation [--rounds 3] [--chunks 40] [--flooders 12]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from wxnet.client.basiclink import BasicLink
from wxnet.proto import wxnet_pb2 as pb
from wxnet.proto.errors import MMRet
from wxnet.server.app import start_server
from wxnet.server.config import ServerConfig
from wxnet.sync.engine import EngineConfig

PASSWORD = "bench-pw1"
T = TypeVar("T")


async def _login(port: int, user: str, device: str) -> tuple[BasicLink, pb.BaseRequest]:
    link = await BasicLink.connect("127.0.0.1", port)
    r = await link.call(
        "manualauth",
        pb.ManualAuthRequest(
            base=pb.BaseRequest(device_id=device),
            user_name=user,
            password=PASSWORD,
            device_name=device,
        ),
        pb.ManualAuthResponse,
    )
    base = pb.BaseRequest(session_key=r.session_key, uin=r.uin, device_id=device)
    await link.call("identify", pb.IdentifyRequest(base=base), pb.IdentifyResponse)
    return link, base


async def _chunks(link: BasicLink, base: pb.BaseRequest, n: int, tag: str) -> list[float]:
    data = os.urandom(64 * 1024)
    total = (n + 1) * len(data)  # never the last chunk: no join, only chunk writes
    out = []
    for i in range(n):
        req = pb.UploadMsgImgRequest(
            base=base,
            client_img_id=f"img-{tag}",
            to_user="victim",
            total_len=total,
            start_pos=i * len(data),
            data=data,
        )
        t0 = time.perf_counter()
        await link.call("uploadmsgimg", req, pb.UploadMsgImgResponse)
        out.append(time.perf_counter() - t0)
    return out


async def _flood(port: int, user: str, stop: asyncio.Event, counts: dict[str, int]) -> None:
    link = await BasicLink.connect("127.0.0.1", port)
    try:
        i = 0
        while not stop.is_set():
            r = await link.call(
                "manualauth",
                pb.ManualAuthRequest(
                    base=pb.BaseRequest(device_id=f"{user}-{i % 4}"),
                    user_name=user,
                    password=PASSWORD,
                    device_name="flood",
                ),
                pb.ManualAuthResponse,
                check=False,
            )
            key = "busy" if r.base.ret == MMRet.ERR_BUSY else "ok" if r.base.ret == 0 else "other"
            counts[key] += 1
            i += 1
    finally:
        link.close()


def _p(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] * 1000


async def run(rounds: int, chunks: int, flooders: int) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        cfg = ServerConfig(
            host="127.0.0.1",
            long_port=0,
            http_port=0,
            data=Path(tmp),
            sync=EngineConfig(durability="NORMAL", contacts="open", max_sessions_per_account=8),
        )
        srv = await start_server(cfg)
        try:
            for name in ["victim", *(f"flood{i}" for i in range(flooders))]:
                await srv.engine.add_user(name, PASSWORD)
            link, base = await _login(srv.long_port, "victim", "victim-phone")
            quiet: list[float] = []
            flood: list[float] = []
            shared: list[float] = []
            counts = {"ok": 0, "busy": 0, "other": 0}
            own_pool = srv.engine.passwords.run

            async def on_default_executor(fn: Callable[..., T], *args: object) -> T:
                return await asyncio.to_thread(fn, *args)

            for r in range(rounds):
                quiet += await _chunks(link, base, chunks, f"a{r}")
                for mode, out in (("own", flood), ("shared", shared)):
                    srv.engine.passwords.run = own_pool if mode == "own" else on_default_executor  # type: ignore[method-assign]
                    stop = asyncio.Event()
                    tasks = [
                        asyncio.ensure_future(_flood(srv.long_port, f"flood{i}", stop, counts))
                        for i in range(flooders)
                    ]
                    out += await _chunks(link, base, chunks, f"{mode}{r}")
                    stop.set()
                    await asyncio.gather(*tasks)
            srv.engine.passwords.run = own_pool  # type: ignore[method-assign]
            link.close()
        finally:
            await srv.close()
    qa, fb = statistics.median(quiet) * 1000, statistics.median(flood) * 1000
    sc = statistics.median(shared) * 1000
    return {
        "chunks_per_case": len(quiet),
        "quiet_median_ms": round(qa, 2),
        "quiet_p90_ms": round(_p(quiet, 0.9), 2),
        "flood_own_pool_median_ms": round(fb, 2),
        "flood_own_pool_p90_ms": round(_p(flood, 0.9), 2),
        "flood_shared_pool_median_ms": round(sc, 2),
        "flood_shared_pool_p90_ms": round(_p(shared, 0.9), 2),
        "own_pool_vs_quiet_median": round(fb / qa, 2),
        "shared_vs_own_pool_median": round(sc / fb, 2),
        "shared_vs_own_pool_p90": round(_p(shared, 0.9) / _p(flood, 0.9), 2),
        "logins": counts,
        "loadavg": [round(x, 2) for x in os.getloadavg()],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--chunks", type=int, default=40)
    p.add_argument("--flooders", type=int, default=12)
    args = p.parse_args()
    print(json.dumps(asyncio.run(run(args.rounds, args.chunks, args.flooders)), indent=2))


if __name__ == "__main__":
    main()
