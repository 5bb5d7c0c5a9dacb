"""Runs in the phone namespace: three users log in to the real wxnet server through the
gateway, each by another attestation, and exchange a message
(``python -m tests.gate.wxphone GATEWAY BUILTIN``).

- bob dials the server's built-in address (inside the declared operator ranges, no DNS),
  then fetches newgetdns from it over plain HTTP on port 80 (S10);
- carol dials the long-link address that only that newgetdns answer named;
- alice resolves szlong.weixin.qq.com through the gateway's DNS filter;
- bob makes one short-link call over HTTP (POST /cgi-bin/micromsg-bin/newsync) on 80.
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
from wxnet.proto.newgetdns import parse_newgetdns


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


async def main(gateway: str, builtin: str) -> dict[str, object]:
    bob = await login(builtin, "bob")
    async with aiohttp.ClientSession() as http:
        url = f"http://{builtin}:80/cgi-bin/micromsg-bin/newgetdns"
        async with http.get(url, params={"uin": "0"}) as fetched:
            doc = parse_newgetdns(await fetched.read())
    newdns = doc.domains[0].ips[0]
    carol = await login(newdns, "carol")
    await carol.sync()
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
    for d in (alice, bob, carol):
        await d.close()
    return {
        "resolved": resolved,
        "newgetdns": newdns,
        "msg_id": sent.msg_id,
        "notify": notify,
        "received": got,
        "short_ret": resp.base.ret,
    }


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(sys.argv[1], sys.argv[2]))), flush=True)
