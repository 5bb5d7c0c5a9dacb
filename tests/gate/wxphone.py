"""Runs in the phone namespace: two users log in to the real wxnet server through the
gateway and exchange a message (``python -m tests.gate.wxphone GATEWAY HARDCODED``).

bob first dials the server's address hard-coded, before any DNS answer named it (the
inspector classifies the 2014 head and splices); then alice resolves
szlong.weixin.qq.com through the gateway's DNS filter (kernel path from then on).
bob also makes one short-link call over HTTP (POST /cgi-bin/micromsg-bin/newsync).
Prints one JSON object.
"""

from __future__ import annotations

import asyncio
import json
import sys

import aiohttp
from dnslib import QTYPE, DNSRecord

from tests.server.wire import Account, Device, LongClient, ShortClient
from wxnet.proto import wxnet_pb2 as pb


async def login(host: str, user: str) -> Device:
    link = await LongClient.connect(8080, host)
    acc = Account(user, device_id=f"{user}-phone")
    r = await link.call(
        "manualauth",
        pb.ManualAuthRequest(
            base=pb.BaseRequest(device_id=acc.device_id),
            user_name=user,
            password="secret1",
            device_name="phone",
        ),
        pb.ManualAuthResponse,
    )
    assert r.base.ret == 0, r.base.err_msg
    acc.uin, acc.sid = r.uin, r.session_key
    ident = await link.call("identify", pb.IdentifyRequest(base=acc.base()), pb.IdentifyResponse)
    assert ident.base.ret == 0, ident.base.err_msg
    return Device(link, acc)


async def main(gateway: str, hardcoded: str) -> dict[str, object]:
    bob = await login(hardcoded, "bob")
    q = DNSRecord.question("szlong.weixin.qq.com")
    answer = DNSRecord.parse(q.send(gateway, 53, timeout=3))
    resolved = next(str(rr.rdata) for rr in answer.rr if rr.rtype == QTYPE.A)
    alice = await login(resolved, "alice")
    await alice.sync()
    await bob.sync()
    r = await alice.call("verifyuser", pb.AddContactRequest(user_name="bob"), pb.AddContactResponse)
    assert r.base.ret == 0, r.base.err_msg
    await bob.sync()
    while not bob.link.notifies.empty():  # the contact change's notify
        bob.link.notifies.get_nowait()
    sent = await alice.send("bob", "hello through the gate", "cm-gate-1")
    notify = await bob.link.next_notify()
    got = [(m.from_user, m.content) for m in await bob.messages()]
    async with aiohttp.ClientSession() as http:
        short = ShortClient(f"http://{resolved}:80", http)
        req = pb.NewSyncRequest(key_buf=bob.acc.key.to_bytes())
        req.base.CopyFrom(bob.acc.base())
        resp = await short.call("newsync", req, pb.NewSyncResponse)
    for d in (alice, bob):
        await d.close()
    return {
        "resolved": resolved,
        "msg_id": sent.msg_id,
        "notify": notify,
        "received": got,
        "short_ret": resp.base.ret,
    }


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(sys.argv[1], sys.argv[2]))), flush=True)
