"""Media: chunked, resumable, parallel image upload with server-side join and thumbnail
(S24); voice in chunks with end and cancel flags (S25); downloads."""

from __future__ import annotations

import asyncio
import io
import random

from PIL import Image

from tests.server.test_messaging import befriend
from tests.server.wire import Device
from wxnet.proto import wxnet_pb2 as pb
from wxnet.proto.errors import MMRet
from wxnet.server.app import Server
from wxnet.server.config import ServerConfig


def png(w: int = 320, h: int = 240) -> bytes:
    img = Image.new("RGB", (w, h))
    rnd = random.Random(7)
    img.putdata([(rnd.randrange(256), x % 256, 90) for x in range(w * h)])
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def chunk(to: str, cid: str, data: bytes, pos: int, size: int) -> pb.UploadMsgImgRequest:
    return pb.UploadMsgImgRequest(
        client_img_id=cid,
        to_user=to,
        total_len=len(data),
        start_pos=pos,
        data=data[pos : pos + size],
    )


async def pair(server: Server) -> tuple[Device, Device]:
    a = await Device.login(server.long_port, "alice")
    b = await Device.login(server.long_port, "bob")
    await befriend(a, "bob")
    await b.sync()
    return a, b


async def test_image_parallel_out_of_order_chunks_join_with_thumbnail(server: Server) -> None:
    a, b = await pair(server)
    data = png()
    size = 1536  # the seed's ~1.5 KB parts
    offsets = list(range(0, len(data), size))
    random.Random(1).shuffle(offsets)
    last = offsets.pop()  # send the final missing chunk alone, at the end
    inflight = asyncio.Semaphore(8)  # several POSTs at once (S24), within the link's bound

    async def put(o: int) -> pb.UploadMsgImgResponse:
        async with inflight:
            return await a.call(
                "uploadmsgimg", chunk("bob", "img-1", data, o, size), pb.UploadMsgImgResponse
            )

    replies = await asyncio.gather(*(put(o) for o in offsets))
    assert [r.base.err_msg for r in replies if r.base.ret] == []
    assert all(r.msg_id == 0 for r in replies)
    assert replies[-1].start_pos <= last  # the server names the lowest missing offset
    done = await a.call(
        "uploadmsgimg", chunk("bob", "img-1", data, last, size), pb.UploadMsgImgResponse
    )
    assert done.base.ret == 0 and done.msg_id and done.start_pos == len(data)
    thumb = Image.open(io.BytesIO(done.thumb))
    assert thumb.size[0] <= 100 and thumb.size[1] <= 100 and thumb.format == "JPEG"
    msgs = await b.messages()
    assert [(m.msg_type, m.msg_id, m.media_len) for m in msgs] == [(3, done.msg_id, len(data))]
    assert msgs[0].img_buf == done.thumb
    # download the original in chunks
    got = b""
    while True:
        r = await b.call(
            "getmsgimg",
            pb.DownloadMsgImgRequest(msg_id=done.msg_id, start_pos=len(got), data_len=50_000),
            pb.DownloadMsgImgResponse,
        )
        assert r.base.ret == 0 and r.total_len == len(data)
        got += r.data
        if len(got) >= r.total_len:
            break
    assert got == data
    # a repeat of the whole upload is a duplicate: same message, nothing new delivered
    again = await a.call(
        "uploadmsgimg", chunk("bob", "img-1", data, 0, size), pb.UploadMsgImgResponse
    )
    assert again.msg_id == done.msg_id
    assert await b.messages() == []
    # carol cannot download it
    c = await Device.login(server.long_port, "carol")
    r = await c.call(
        "getmsgimg", pb.DownloadMsgImgRequest(msg_id=done.msg_id), pb.DownloadMsgImgResponse
    )
    assert r.base.ret == MMRet.ERR_NOT_FOUND
    for d in (a, b, c):
        await d.close()


async def test_image_upload_resumes_after_server_restart(config: ServerConfig) -> None:
    from wxnet.server.app import start_server

    data = png(200, 150)
    srv = await start_server(config)
    for n in ("alice", "bob"):
        await srv.engine.add_user(n, "secret1")
    a, b = await pair(srv)
    await b.close()
    half = len(data) // 2
    r = await a.call("uploadmsgimg", chunk("bob", "img-r", data, 0, half), pb.UploadMsgImgResponse)
    assert r.start_pos == half
    await a.close()
    await srv.close()
    srv = await start_server(config)
    try:
        a = await Device.login(srv.long_port, "alice")
        probe = await a.call(
            "uploadmsgimg", chunk("bob", "img-r", data, 0, 0), pb.UploadMsgImgResponse
        )
        assert probe.start_pos == half  # the server says where to resume
        fin = await a.call(
            "uploadmsgimg", chunk("bob", "img-r", data, half, len(data)), pb.UploadMsgImgResponse
        )
        assert fin.msg_id
        await a.close()
    finally:
        await srv.close()


async def test_image_errors(server: Server) -> None:
    a, b = await pair(server)
    junk = b"not an image at all" * 10
    r = await a.call(
        "uploadmsgimg", chunk("bob", "bad", junk, 0, len(junk)), pb.UploadMsgImgResponse
    )
    assert r.base.ret == MMRet.ERR_ARG and "not an image" in r.base.err_msg
    big = pb.UploadMsgImgRequest(
        client_img_id="big", to_user="bob", total_len=server.config.sync.max_image_bytes + 1
    )
    assert (
        await a.call("uploadmsgimg", big, pb.UploadMsgImgResponse)
    ).base.ret == MMRet.ERR_TOO_LARGE
    first = pb.UploadMsgImgRequest(client_img_id="p", to_user="bob", total_len=10, data=b"ab")
    assert (await a.call("uploadmsgimg", first, pb.UploadMsgImgResponse)).start_pos == 2
    past = pb.UploadMsgImgRequest(
        client_img_id="p", to_user="bob", total_len=10, start_pos=8, data=b"abc"
    )
    assert (
        await a.call("uploadmsgimg", past, pb.UploadMsgImgResponse)
    ).base.ret == MMRet.ERR_UPLOAD_OFFSET
    stranger = pb.UploadMsgImgRequest(client_img_id="s", to_user="carol", total_len=3, data=b"abc")
    assert (
        await a.call("uploadmsgimg", stranger, pb.UploadMsgImgResponse)
    ).base.ret == MMRet.ERR_NOT_FRIEND
    changed = pb.UploadMsgImgRequest(client_img_id="p", to_user="bob", total_len=11, data=b"a")
    assert (
        await a.call("uploadmsgimg", changed, pb.UploadMsgImgResponse)
    ).base.ret == MMRet.ERR_ARG
    assert await b.messages() == []
    await a.close()
    await b.close()


async def test_voice_chunks_end_and_cancel(server: Server) -> None:
    a, b = await pair(server)
    clip = bytes(range(256)) * 12  # ~3 KB: two chunks of at most ~1.5 KB (S25)
    parts = [clip[:1536], clip[1536:]]

    def vreq(
        off: int, data: bytes, *, end: bool = False, cancel: bool = False, cid: str = "v1"
    ) -> pb.UploadVoiceRequest:
        return pb.UploadVoiceRequest(
            client_msg_id=cid,
            to_user="bob",
            offset=off,
            data=data,
            voice_length=2000,
            voice_format=0,
            end_flag=end,
            cancel_flag=cancel,
        )

    r1 = await a.call("uploadvoice", vreq(0, parts[0]), pb.UploadVoiceResponse)
    assert r1.offset == 1536 and r1.msg_id == 0
    gap = await a.call("uploadvoice", vreq(4000, b"x"), pb.UploadVoiceResponse)
    assert gap.base.ret == MMRet.ERR_UPLOAD_OFFSET
    dup = await a.call("uploadvoice", vreq(0, parts[0]), pb.UploadVoiceResponse)
    assert dup.offset == 1536  # a retried chunk is harmless
    r2 = await a.call("uploadvoice", vreq(1536, parts[1], end=True), pb.UploadVoiceResponse)
    assert r2.msg_id and r2.offset == len(clip)
    msgs = await b.messages()
    assert [(m.msg_type, m.voice_length, m.media_len) for m in msgs] == [(34, 2000, len(clip))]
    dl = await b.call(
        "downloadvoice",
        pb.DownloadVoiceRequest(msg_id=r2.msg_id, length=60000),
        pb.DownloadVoiceResponse,
    )
    assert dl.data == clip
    # cancel: nothing is delivered
    await a.call("uploadvoice", vreq(0, parts[0], cid="v2"), pb.UploadVoiceResponse)
    c = await a.call("uploadvoice", vreq(0, b"", cancel=True, cid="v2"), pb.UploadVoiceResponse)
    assert c.cancelled
    assert await b.messages() == []
    await a.close()
    await b.close()
