"""Bad input never crashes the server nor damages what is stored."""

from __future__ import annotations

import asyncio
import dataclasses
import ssl
import subprocess
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.server.test_flusher import until
from tests.server.test_messaging import befriend
from tests.server.wire import Device, LongClient
from wxnet.proto import commands as C
from wxnet.proto import wxnet_pb2 as pb
from wxnet.proto.errors import MMRet
from wxnet.proto.framing import encode_packet
from wxnet.proto.longlink import RemoteError
from wxnet.server.app import Server, start_server
from wxnet.server.config import ServerConfig
from wxnet.server.dispatch import BadRequest, Context


async def still_serves(server: Server) -> None:
    d = await Device.login(server.long_port, "carol", device="check")
    r = await d.call("getprofile", pb.GetProfileRequest(), pb.GetProfileResponse)
    assert r.user.user_name == "carol"
    await d.close()


async def test_garbage_bytes_get_a_protocol_error_then_close(server: Server) -> None:
    link = await LongClient.connect(server.long_port)
    link.send_raw(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    err = await asyncio.wait_for(link.other.get(), 10)  # cmd 1000000000, seq 0
    assert isinstance(err, RemoteError)
    assert err.code == MMRet.ERR_BAD_REQUEST and "version" in err.message
    await asyncio.wait_for(link.closed.wait(), 10)
    await link.close()
    await still_serves(server)


async def test_oversized_and_truncated_packets(server: Server) -> None:
    link = await LongClient.connect(server.long_port)
    link.send_raw((2 << 20).to_bytes(4, "big") + b"\x00\x10\x00\x01" + bytes(8))
    err = await asyncio.wait_for(link.other.get(), 10)
    assert isinstance(err, RemoteError) and "limit" in err.message
    await asyncio.wait_for(link.closed.wait(), 10)
    await link.close()
    # a truncated packet followed by a hang-up leaves nothing behind
    link2 = await LongClient.connect(server.long_port)
    link2.send_raw(encode_packet(121, 1, b"abcdef")[:10])
    await link2.close()
    await still_serves(server)


async def test_unknown_cmd_and_undecodable_body_keep_the_link(server: Server) -> None:
    link = await LongClient.connect(server.long_port)
    p = await link.request(4242, b"")
    assert p.cmd == C.reply_cmd(4242)
    assert pb.LogoutResponse.FromString(p.body).base.ret == MMRet.ERR_UNKNOWN_CMD
    p = await link.request(121, b"\xff\xff\xff\xff")
    assert pb.NewSyncResponse.FromString(p.body).base.ret == MMRet.ERR_BAD_REQUEST
    p = await link.request(6, b"", seq=0xFFFFFFFF)
    assert p.cmd == 1_000_000_006
    await link.close()


async def test_requests_before_login_and_identify_over_http(server: Server) -> None:
    link = await LongClient.connect(server.long_port)
    r = await link.call("identify", pb.IdentifyRequest(), pb.IdentifyResponse)
    assert r.base.ret == MMRet.ERR_SESSIONTIMEOUT
    await link.close()


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(name=st.sampled_from([c.name for c in C.CGIS]), body=st.binary(max_size=120))
async def test_fuzz_every_handler(server: Server, name: str, body: bytes) -> None:
    """Random bodies to every CGI: a response or BadRequest, never an escaping error."""
    cgi = C.BY_NAME[name]
    if name == "newsynccheck":
        server.dispatcher.synccheck_max = 0.0
    try:
        out = await server.dispatcher.handle(cgi, body, Context("fuzz"))
    except BadRequest:
        return
    resp = cgi.response.FromString(out)
    assert resp.base.ret != MMRet.ERR_SYS, resp.base.err_msg  # type: ignore[attr-defined]


async def test_replayed_sends_and_garbage_do_not_damage_stored_data(server: Server) -> None:
    a = await Device.login(server.long_port, "alice")
    b = await Device.login(server.long_port, "bob")
    await befriend(a, "bob")
    sent = [await a.send("bob", f"m{i}", f"id{i}") for i in range(5)]
    for i in range(5):  # replay every send
        assert (await a.send("bob", "replay", f"id{i}")).msg_id == sent[i].msg_id
    link = await LongClient.connect(server.long_port)
    link.send_raw(b"\x00" * 64)
    await asyncio.wait_for(link.closed.wait(), 10)
    await link.close()
    assert [m.content for m in await b.messages()] == [f"m{i}" for i in range(5)]
    await a.close()
    await b.close()


async def test_idle_links_are_closed(config: ServerConfig) -> None:
    srv = await start_server(dataclasses.replace(config, idle_timeout=0.2))
    try:
        link = await LongClient.connect(srv.long_port)
        await asyncio.wait_for(link.closed.wait(), 10)
        await link.close()
    finally:
        await srv.close()


async def test_idle_identified_links_are_closed_and_counted(config: ServerConfig) -> None:
    # An identified link is the notifier's, not in the server's set of unbound links:
    # the sweep, the gauges and shutdown still find it.
    srv = await start_server(dataclasses.replace(config, idle_timeout=1.0))
    try:
        await srv.engine.add_user("alice", "secret1", "Alice")
        dev = await Device.login(srv.long_port, "alice")
        unbound = await LongClient.connect(srv.long_port)
        await until(lambda: len(srv.long_links()) == 2)  # (the server accepts it)
        assert srv.notifier.total_links == 1 and len(srv.unbound) == 1
        await asyncio.wait_for(dev.link.closed.wait(), 10)
        await asyncio.wait_for(unbound.closed.wait(), 10)
        await dev.link.close()
        await unbound.close()
        await until(lambda: not srv.long_links())
        assert srv.notifier.total_links == 0 and not srv.unbound
    finally:
        await srv.close()


async def test_long_link_over_tls(config: ServerConfig, tmp_path: Path) -> None:
    key, cert = tmp_path / "k.pem", tmp_path / "c.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    srv = await start_server(dataclasses.replace(config, tls_cert=str(cert), tls_key=str(key)))
    try:
        ctx = ssl.create_default_context(cafile=str(cert))
        ctx.check_hostname = False
        link = await LongClient.connect(srv.long_port, tls=ctx)
        p = await link.request(6, b"", seq=0xFFFFFFFF)
        assert p.cmd == 1_000_000_006
        await link.close()
    finally:
        await srv.close()


async def test_seq_rules_are_enforced_by_the_server(server: Server) -> None:
    """docs/protocol.md "Sequence numbers": identify only on 0xFFFFFFFE, no seq 0 from a
    client; a breach gets the protocol error and the link closes; others keep serving."""
    for bad in (encode_packet(C.CMD_IDENTIFY, 7), encode_packet(121, 0)):
        link = await LongClient.connect(server.long_port)
        link.send_raw(bad)
        err = await asyncio.wait_for(link.other.get(), 10)
        assert isinstance(err, RemoteError) and err.code == MMRet.ERR_BAD_REQUEST
        await asyncio.wait_for(link.closed.wait(), 10)
        await link.close()
    link = await LongClient.connect(server.long_port)  # the seed's noop, on seq 15
    p = await link.request(6, b"", seq=15)
    assert (p.cmd, p.seq) == (1_000_000_006, 15)
    await link.close()
    await still_serves(server)
