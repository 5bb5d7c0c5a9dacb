"""webwxhistory requests per second, against an idle webwxsync in the same run.

    python -m bench.web_history [--seconds 5] [--concurrency 8] [--messages 5000]

A ``wxnet serve`` child process; alice's log gets ``--messages`` messages, bob's and
carol's alternating, after one from dave at the very start. Measured, each for
``--seconds``, alternating A/B ``--rounds`` times (medians printed):

* baseline: ``POST webwxsync`` with the session's current key (nothing new);
* conversation: ``webwxhistory`` of bob, Count 30 (the page opening a chat: 60 log
  items read);
* recent: ``webwxhistory`` over all conversations, Count 100 (the page after login);
* sparse: ``webwxhistory`` of dave, whose only message is 5,000 items back: the request
  reads ``history_max_scan`` (2,000) items and answers an empty page with a Next.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import aiohttp

from bench.spawn import ServerProcess
from bench.web_sync import CGI, JSON, login, mm, rate, web_login
from wxnet.proto import web as wp
from wxnet.proto import wxnet_pb2 as pb

USERS = ("alice", "bob", "carol", "dave")


async def setup(data: Path) -> None:
    wxnet = [sys.executable, "-m", "wxnet"]
    init = await asyncio.create_subprocess_exec(
        *wxnet, "store", "init", "--data", str(data), stdout=asyncio.subprocess.DEVNULL
    )
    assert await init.wait() == 0
    for name in USERS:
        add = await asyncio.create_subprocess_exec(
            *wxnet, "user", "add", name, "--password", "secret1", "--data", str(data),
            stdout=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        assert await add.wait() == 0


async def send(http: aiohttp.ClientSession, base: str, phone: pb.BaseRequest, n: int) -> None:
    msgs = [
        pb.MicroMsg(
            to_user="alice", content=f"m{i}", msg_type=1, client_msg_id=secrets.token_hex(8)
        )
        for i in range(n)
    ]
    out = await mm(
        http, base, "newsendmsg", pb.SendMsgRequest(base=phone, list=msgs), pb.SendMsgResponse
    )
    assert out.base.ret == 0, out.base.err_msg


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--messages", type=int, default=5000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    data = Path(tempfile.mkdtemp(prefix="wxnet-bench-"))
    await setup(data)
    srv = await ServerProcess.on_data(data, "--contacts", "open").astart(30)
    base = f"http://127.0.0.1:{srv.http_port}"
    try:
        conn = aiohttp.TCPConnector(limit=args.concurrency * 2)
        async with aiohttp.ClientSession(connector=conn) as http:
            phones = {name: await login(http, base, name) for name in USERS}
            for peer in ("bob", "carol", "dave"):
                req = pb.AddContactRequest(base=phones["alice"], user_name=peer)
                await mm(http, base, "verifyuser", req, pb.AddContactResponse)
            await send(http, base, phones["dave"], 1)
            for _ in range(args.messages // 2 // 10):
                await send(http, base, phones["bob"], 10)
                await send(http, base, phones["carol"], 10)
            br = await web_login(http, base, phones["alice"])
            async with http.post(
                f"{base}{CGI}/webwxinit", data=json.dumps({"BaseRequest": br}), headers=JSON
            ) as r:
                text = await r.text()
                assert r.status == 200, (r.status, text)
                key = json.loads(text)["SyncKey"]

            async def post(path: str, body: dict[str, Any]) -> dict[str, Any]:
                async with http.post(
                    base + CGI + path, data=json.dumps({"BaseRequest": br, **body}), headers=JSON
                ) as r:
                    out: dict[str, Any] = json.loads(await r.text())
                assert out["BaseResponse"]["Ret"] == 0, out
                return out

            async def idle_sync() -> None:
                await post("/webwxsync", {"SyncKey": key, "rr": -1})

            async def conversation() -> None:
                out = await post(
                    "/webwxhistory", {"UserName": wp.web_user_name("bob"), "Count": 30}
                )
                assert out["Count"] == 30

            async def recent() -> None:
                assert (await post("/webwxhistory", {"Count": 100}))["Count"] == 100

            async def sparse() -> None:
                out = await post("/webwxhistory", {"UserName": wp.web_user_name("dave")})
                assert out["Count"] == 0 and out["Next"] > 0

            cases = {"webwxsync_idle": idle_sync, "history_conversation": conversation,
                     "history_recent": recent, "history_sparse": sparse}  # fmt: skip
            runs: dict[str, list[float]] = {k: [] for k in cases}
            for _ in range(args.rounds):
                for name, fn in cases.items():
                    runs[name].append(await rate(args.seconds, args.concurrency, fn))
            med: dict[str, float] = {
                f"{k}_per_s": round(statistics.median(v)) for k, v in runs.items()
            }
            base_rate = statistics.median(runs["webwxsync_idle"])
            for k in ("history_conversation", "history_recent", "history_sparse"):
                med[f"{k}_ratio_to_sync"] = round(statistics.median(runs[k]) / base_rate, 3)
            print(json.dumps(med))
    finally:
        await srv.astop()


if __name__ == "__main__":
    asyncio.run(main())
