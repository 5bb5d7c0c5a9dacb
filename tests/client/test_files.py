"""Files and videos between two users (and a second device) through the real server
on loopback: chunked parallel uploads, a thumbnail given or the server's placeholder,
chunked downloads, the content XML, resume and the caps."""

from __future__ import annotations

import io
import random
from pathlib import Path

import pytest
from google.protobuf.message import Message
from PIL import Image

from tests.client.conftest import Clients, until
from tests.client.test_exchange import config, make_image
from wxnet.client.sdk import MSG_FILE, MSG_VIDEO, Client
from wxnet.proto import mediaxml
from wxnet.proto import wxnet_pb2 as pb
from wxnet.proto.errors import MMError, MMRet
from wxnet.server.app import Server


def _blob(path: Path, n: int, seed: int) -> bytes:
    data = random.Random(seed).randbytes(n)
    path.write_bytes(data)
    return data


async def _ask(client: Client, cgi: str, req: Message) -> pb.UploadMediaResponse:
    try:
        return await client.links.request(cgi, req, pb.UploadMediaResponse)
    except MMError as exc:
        return pb.UploadMediaResponse(base=pb.BaseResponse(ret=exc.code, err_msg=exc.message))


async def test_file_and_video_reach_the_peer_and_download(
    server: Server, clients: Clients, tmp_path: Path
) -> None:
    cfg = config(server, image_chunk=4000, parallel_chunks=3)
    alice = await clients.new("alice", "phone", cfg)
    tablet = await clients.new("alice", "tablet", cfg)
    bob = await clients.new("bob", "phone", cfg)
    await alice.add_contact("bob")
    doc = _blob(tmp_path / "report 2026.pdf", 10_001, 1)  # not a multiple of the chunk
    r = await alice.send_file("bob", tmp_path / "report 2026.pdf")
    assert r.state == "sent", r.error
    file_id = r.msg_id
    video = _blob(tmp_path / "clip.mp4", 9000, 2)
    make_image(tmp_path / "t.png", 3, (320, 200))
    r = await bob.send_video("alice", tmp_path / "clip.mp4", tmp_path / "t.png", 7)
    assert r.state == "sent", r.error
    video_id = r.msg_id
    r = await bob.send_video("alice", tmp_path / "clip.mp4")  # no thumbnail given
    assert r.state == "sent", r.error
    plain_id = r.msg_id

    def arrived() -> bool:
        return all(
            c.store.message(i) is not None
            for c in (alice, tablet, bob)
            for i in (file_id, video_id, plain_id)
        )

    await until([alice, tablet, bob], arrived, "the file and videos on every device")
    m = bob.store.message(file_id)
    assert m is not None and m.msg_type == MSG_FILE and m.media_len == len(doc)
    info = mediaxml.parse_file(m.content)
    assert info == mediaxml.FileInfo("report 2026.pdf", len(doc), "", mediaxml.APP_FILE)
    assert await bob.download_file(file_id, tmp_path / "got.pdf") == len(doc)
    assert (tmp_path / "got.pdf").read_bytes() == doc
    assert await tablet.download_file(file_id, tmp_path / "got2.pdf") == len(doc)

    v = alice.store.message(video_id)
    assert v is not None and v.msg_type == MSG_VIDEO and v.has_thumb and v.media_len == 9000
    assert mediaxml.parse_video(v.content) == mediaxml.VideoInfo(9000, 7)
    assert await alice.download_video(video_id, tmp_path / "v.mp4") == 9000
    assert (tmp_path / "v.mp4").read_bytes() == video
    await alice.download_video(video_id, tmp_path / "v.jpg", thumb=True)
    with Image.open(tmp_path / "v.jpg") as t:  # the sender's, made small
        assert t.format == "JPEG" and max(t.size) == 100
    await alice.download_video(plain_id, tmp_path / "p.jpg", thumb=True)
    with Image.open(tmp_path / "p.jpg") as t:  # the placeholder
        assert t.size == (96, 64)
    # a file is not a video: each download CGI reads its own kind only
    with pytest.raises(MMError) as err:
        await bob.links.request(
            "downloadvideo", pb.DownloadMediaRequest(msg_id=file_id), pb.DownloadMediaResponse
        )
    assert err.value.code == MMRet.ERR_NOT_FOUND


async def test_uploads_resume_and_refuse_what_is_wrong(
    server: Server, clients: Clients, tmp_path: Path
) -> None:
    alice = await clients.new("alice", "phone", config(server))
    await alice.add_contact("bob")
    data = random.Random(4).randbytes(3000)

    async def put(start: int, end: int, **kw: object) -> pb.UploadMediaResponse:
        """The reply, or one carrying the refusal's code."""
        req = pb.UploadAppAttachRequest(
            base=alice.links.base(),
            client_msg_id="f-1",
            to_user="bob",
            total_len=len(data),
            start_pos=start,
            data=data[start:end],
            file_name="a.bin",
        )
        for k, v in kw.items():
            setattr(req, k, v)
        return await _ask(alice, "uploadappattach", req)

    r = await put(1000, 2000)
    assert r.base.ret == 0 and r.start_pos == 0 and not r.msg_id
    r = await put(0, 1000)
    assert r.start_pos == 2000 and not r.msg_id  # the lowest offset still missing
    r = await put(2000, 3000)
    assert r.msg_id and r.start_pos == 3000
    again = await put(2000, 3000)  # a retried last chunk answers from the message
    assert again.msg_id == r.msg_id
    for bad, code in (
        ({"file_name": "../etc/passwd", "client_msg_id": "f-2"}, MMRet.ERR_ARG),
        ({"file_name": "", "client_msg_id": "f-3"}, MMRet.ERR_ARG),
        (
            {"total_len": server.config.sync.max_file_bytes + 1, "client_msg_id": "f-4"},
            MMRet.ERR_TOO_LARGE,
        ),
    ):
        resp = await put(0, 10, **bad)
        assert resp.base.ret == code, (bad, resp.base.err_msg)

    async def video(start: int, thumb: bytes, cid: str) -> pb.UploadMediaResponse:
        req = pb.UploadVideoRequest(
            base=alice.links.base(),
            client_msg_id=cid,
            to_user="bob",
            total_len=100,
            start_pos=start,
            data=b"x" * 10,
            thumb=thumb,
        )
        return await _ask(alice, "uploadvideo", req)

    assert (await video(0, b"not an image", "v-1")).base.ret == MMRet.ERR_ARG
    assert (await video(10, b"\x89PNG", "v-2")).base.ret == MMRet.ERR_ARG  # not at 0
    big = b"\0" * (server.config.sync.max_thumb_bytes + 1)
    assert (await video(0, big, "v-3")).base.ret == MMRet.ERR_TOO_LARGE
    buf = io.BytesIO()
    Image.new("RGB", (10, 10)).save(buf, "PNG")
    assert (await video(0, buf.getvalue(), "v-4")).base.ret == 0
