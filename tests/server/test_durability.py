"""SIGKILL the server between acks, restart it: every acknowledged message is still
delivered, exactly once; unacknowledged ones resent with their ClientMsgId land once."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from bench.spawn import ServerProcess
from tests.server.wire import Device
from wxnet.client.errors import TransportError
from wxnet.proto import wxnet_pb2 as pb

pytestmark = pytest.mark.slow


def wxnet(*args: str) -> list[str]:
    return [sys.executable, "-m", "wxnet", *args]


async def start(data: Path) -> ServerProcess:
    return await ServerProcess.on_data(data, "--contacts", "open").astart(30)


async def send_until_killed(proc: ServerProcess, port: int) -> tuple[dict[str, int], list[str]]:
    """Four concurrent senders; SIGKILL the server after 300 acks, while sends are in
    flight. Returns (acked client_msg_id -> msg_id, every client_msg_id attempted)."""
    a = await Device.login(port, "alice")
    await a.call("verifyuser", pb.AddContactRequest(user_name="bob"), pb.AddContactResponse)
    acked: dict[str, int] = {}
    attempted: list[str] = []

    async def sender(worker: int) -> None:
        i = 0
        while True:
            cid = f"w{worker}-{i}"
            attempted.append(cid)
            try:
                r = await a.send("bob", f"text {cid}", cid)
            except TransportError:  # the link closed (or went silent) under the kill
                return
            assert r.ret == 0
            acked[cid] = r.msg_id
            i += 1

    workers = [asyncio.ensure_future(sender(w)) for w in range(4)]
    while len(acked) < 300:
        await asyncio.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)  # while sends are in flight
    await asyncio.wait_for(asyncio.gather(*workers), 30)
    await asyncio.wait_for(proc.wait(), 30)
    await a.close()
    return acked, attempted


async def test_sigkill_between_acks_loses_nothing_acknowledged(tmp_path: Path) -> None:
    data = tmp_path / "var"
    subprocess.run(wxnet("store", "init", "--data", str(data)), check=True)
    for name in ("alice", "bob"):
        subprocess.run(
            wxnet("user", "add", name, "--password", "secret1", "--data", str(data)), check=True
        )
    proc = await start(data)
    try:
        acked, attempted = await send_until_killed(proc, proc.long_port)
    finally:
        proc.kill()

    proc = await start(data)
    port = proc.long_port
    try:
        b = await Device.login(port, "bob")
        msgs = await b.messages()
        got = [m.client_msg_id for m in msgs]
        assert len(got) == len(set(got)), "a message was delivered twice"
        missing = set(acked) - set(got)
        assert not missing, f"acknowledged but lost: {sorted(missing)[:5]}"
        assert {m.client_msg_id: m.msg_id for m in msgs if m.client_msg_id in acked} == acked
        # resend everything that was attempted: dedup makes it safe (S23)
        a = await Device.login(port, "alice")
        for cid in attempted:
            r = await a.send("bob", f"text {cid}", cid)
            assert r.ret == 0 and acked.get(cid, r.msg_id) == r.msg_id
        final = [m.client_msg_id for m in await b.messages()]
        assert sorted(got + final) == sorted(attempted)
        await a.close()
        await b.close()
    finally:
        assert await proc.astop(30) == 0  # clean shutdown on SIGTERM
