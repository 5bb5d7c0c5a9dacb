"""Pending web synccheck long polls: server memory per held poll.

    python -m bench.web_polls [--polls 10000] [--accounts 10]

The server runs in this process; a child process opens the connections, so only the
server's memory is counted. Two phases, each measured as the growth of this process's
resident set divided by the number of connections:

* baseline: N idle keep-alive HTTP connections (connected, no request);
* web: N ``/cgi-bin/mmwebwx-bin/synccheck`` requests, each held by the server (nothing
  new for the session), each from its own web session.

Target (issue 4): 10,000 pending polls at <= 16 kB each.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from wxnet.proto import wxnet_pb2 as pb
from wxnet.proto.synckey import SyncKey
from wxnet.server.app import start_server
from wxnet.server.config import ServerConfig
from wxnet.server.web.api import WEB_API_KEY
from wxnet.sync.engine import EngineConfig

CHILD = r"""
import asyncio, json, sys
async def main():
    port, reqs = int(sys.argv[1]), json.load(open(sys.argv[2]))
    conns = []
    sem = asyncio.Semaphore(500)
    async def one(path):
        async with sem:
            r, w = await asyncio.open_connection("127.0.0.1", port)
            if path:
                w.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
                await w.drain()
            conns.append((r, w))
    await asyncio.gather(*(one(p) for p in reqs))
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
asyncio.run(main())
"""


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


async def hold(port: int, paths: list[str], settle: Any) -> float:
    """Open one connection per path from a child process; returns KiB per connection."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(paths, f)
    gc.collect()
    before = rss_kib()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CHILD,
        str(port),
        f.name,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stdin is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 300)
    assert line.strip() == b"ready", line
    await settle()
    gc.collect()
    after = rss_kib()
    proc.stdin.close()
    await proc.wait()
    Path(f.name).unlink()
    return (after - before) / max(1, len(paths))


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--polls", type=int, default=10_000)
    ap.add_argument("--accounts", type=int, default=10)
    args = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = args.polls * 2 + 1000
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))
    data = Path(tempfile.mkdtemp(prefix="wxnet-bench-"))
    cfg = ServerConfig(
        host="127.0.0.1",
        long_port=0,
        http_port=0,
        data=data,
        sync=EngineConfig(durability="NORMAL"),
        synccheck_max_wait=300.0,
    )
    srv = await start_server(cfg)
    api = srv.app[WEB_API_KEY]
    api.sessions.per_account = args.polls
    paths: list[str] = []
    per = -(-args.polls // args.accounts)
    for a in range(args.accounts):
        uin = await srv.engine.add_user(f"user{a}", "secret1", f"User {a}")
        first = None
        for _ in range(per):
            if len(paths) >= args.polls:
                break
            dev = await api.backend.open_device(uin, "web")
            assert dev is not None
            s = api.sessions.add(uin, dev.user_name, dev.nick_name, dev.session_key, time.time())
            if first is None:
                req = pb.NewInitRequest(base=pb.BaseRequest(session_key=s.session_key, uin=uin))
                resp = await api.backend.call("newinit", req)
                assert isinstance(resp, pb.NewInitResponse)
                first = SyncKey.from_bytes(resp.current_synckey).to_query()
            paths.append(f"/cgi-bin/mmwebwx-bin/synccheck?uin={uin}&sid={s.wxsid}&synckey={first}")

    async def polls_held() -> None:
        while api.pending_polls < len(paths):
            await asyncio.sleep(0.2)

    async def nothing() -> None:
        await asyncio.sleep(1.0)

    base = await hold(srv.http_port, [""] * len(paths), nothing)
    per_poll = await hold(srv.http_port, paths, polls_held)
    print(
        json.dumps(
            {
                "polls": len(paths),
                "idle_connection_kib": round(base, 2),
                "pending_synccheck_kib": round(per_poll, 2),
                "ratio_to_idle_connection": round(per_poll / base, 2) if base > 0 else None,
                "target_kib": 16,
            }
        )
    )
    await srv.close()


if __name__ == "__main__":
    asyncio.run(main())
