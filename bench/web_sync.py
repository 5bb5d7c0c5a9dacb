"""webwxsync requests per second, against ``GET /healthz`` in the same run as baseline.

    python -m bench.web_sync [--seconds 5] [--concurrency 32]

The server runs in a child process (``wxnet serve``), the load generator here, so that
the two do not share one event loop. Three measurements, each for ``--seconds``:

* baseline: ``GET /healthz`` (the cheapest request the server answers);
* idle sync: ``POST webwxsync`` with the session's current key (nothing new);
* busy sync: each webwxsync delivers one new text message, sent just before by a phone
  (the mobile send is included in the time), one at a time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp

from bench.spawn import ServerProcess
from wxnet.proto import web as wp
from wxnet.proto import wxnet_pb2 as pb

CGI = "/cgi-bin/mmwebwx-bin"
#: The web API refuses cross-site forms: its JSON posts say what they are.
JSON = {"Content-Type": "application/json"}


async def rate(seconds: float, conc: int, one: Callable[[], Awaitable[None]]) -> float:
    done = 0
    stop = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal done
        while time.perf_counter() < stop:
            await one()
            done += 1

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(conc)))
    return done / (time.perf_counter() - t0)


async def mm(http: aiohttp.ClientSession, base: str, name: str, req: Any, resp: Any) -> Any:
    async with http.post(f"{base}/cgi-bin/micromsg-bin/{name}", data=req.SerializeToString()) as r:
        out = resp()
        out.ParseFromString(await r.read())
        return out


async def login(http: aiohttp.ClientSession, base: str, name: str) -> pb.BaseRequest:
    """A phone's password login (manualauth): its BaseRequest."""
    req = pb.ManualAuthRequest(
        base=pb.BaseRequest(device_id=f"bench-{name}"),
        user_name=name,
        password="secret1",
        device_name="bench",
    )
    auth = await mm(http, base, "manualauth", req, pb.ManualAuthResponse)
    return pb.BaseRequest(session_key=auth.session_key, uin=auth.uin)


async def web_login(
    http: aiohttp.ClientSession, base: str, phone: pb.BaseRequest
) -> dict[str, Any]:
    """A web login (jslogin, scanned and approved by ``phone``): its BaseRequest JSON."""
    async with http.get(base + "/jslogin") as r:
        _, uuid = wp.parse_qrlogin(await r.text())
    for confirm in (False, True):
        scan = pb.ScanQrRequest(base=phone, uuid=uuid, confirm=confirm)
        await mm(http, base, "scanqrcode", scan, pb.ScanQrResponse)
    async with http.get(f"{base}{CGI}/login?uuid={uuid}") as r:
        poll = wp.parse_login_poll(await r.text())
    async with http.get(poll.redirect_uri, allow_redirects=False) as r:
        t = wp.parse_login_ticket(await r.text())
    return {"Uin": t.wxuin, "Sid": t.wxsid, "Skey": t.skey, "DeviceID": "e1"}


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument(
        "--busy", type=int, default=1, help="concurrent phone senders in the busy phase"
    )
    args = ap.parse_args()
    data = Path(tempfile.mkdtemp(prefix="wxnet-bench-"))
    wxnet = [sys.executable, "-m", "wxnet"]
    init = await asyncio.create_subprocess_exec(
        *wxnet, "store", "init", "--data", str(data), stdout=asyncio.subprocess.DEVNULL
    )
    assert await init.wait() == 0
    for name in ("alice", "bob"):
        add = await asyncio.create_subprocess_exec(
            *wxnet,
            "user",
            "add",
            name,
            "--password",
            "secret1",
            "--data",
            str(data),
            stdout=asyncio.subprocess.DEVNULL,
        )
        assert await add.wait() == 0
    srv = await ServerProcess.on_data(data, "--contacts", "open").astart(30)
    port = srv.http_port
    base = f"http://127.0.0.1:{port}"
    try:
        conn = aiohttp.TCPConnector(limit=args.concurrency * 2)
        async with aiohttp.ClientSession(connector=conn) as http:
            # phones: alice approves her web login; bob sends to her
            phones = {name: await login(http, base, name) for name in ("alice", "bob")}
            await mm(
                http,
                base,
                "verifyuser",
                pb.AddContactRequest(base=phones["alice"], user_name="bob"),
                pb.AddContactResponse,
            )
            br = await web_login(http, base, phones["alice"])
            async with http.post(
                f"{base}{CGI}/webwxinit", data=json.dumps({"BaseRequest": br}), headers=JSON
            ) as r:
                key = json.loads(await r.text())["SyncKey"]

            async def healthz() -> None:
                async with http.get(base + "/healthz") as r:
                    await r.read()

            async def idle_sync() -> None:
                body = json.dumps({"BaseRequest": br, "SyncKey": key, "rr": -1})
                async with http.post(f"{base}{CGI}/webwxsync", data=body, headers=JSON) as r:
                    out = json.loads(await r.text())
                    assert out["BaseResponse"]["Ret"] == 0

            lock = asyncio.Lock()
            delivered = 0

            async def busy_sync() -> None:
                nonlocal key, delivered
                msg = pb.MicroMsg(
                    to_user="alice", content="x", msg_type=1, client_msg_id=secrets.token_hex(8)
                )
                await mm(
                    http,
                    base,
                    "newsendmsg",
                    pb.SendMsgRequest(base=phones["bob"], list=[msg]),
                    pb.SendMsgResponse,
                )
                async with lock:  # one key chain: each sync continues from the last
                    body = json.dumps({"BaseRequest": br, "SyncKey": key, "rr": -1})
                    async with http.post(f"{base}{CGI}/webwxsync", data=body, headers=JSON) as r:
                        out = json.loads(await r.text())
                    assert out["BaseResponse"]["Ret"] == 0, out
                    key = out["SyncKey"]
                    delivered += out["AddMsgCount"]

            results: dict[str, float] = {
                "healthz_per_s": round(await rate(args.seconds, args.concurrency, healthz)),
                "webwxsync_idle_per_s": round(
                    await rate(args.seconds, args.concurrency, idle_sync)
                ),
                # one send + one sync at a time: each sync continues the previous key
                "webwxsync_busy_per_s": round(await rate(args.seconds, args.busy, busy_sync)),
            }
            results["idle_ratio_to_healthz"] = round(
                results["webwxsync_idle_per_s"] / results["healthz_per_s"], 3
            )
            results["messages_delivered"] = delivered
            print(json.dumps(results))
    finally:
        await srv.astop()


if __name__ == "__main__":
    asyncio.run(main())
