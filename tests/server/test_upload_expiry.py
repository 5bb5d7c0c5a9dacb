"""Unfinished mobile uploads expire (``upload_ttl``, the sweep), on the server's fake
clock: the row and the partial file go, a finished upload is untouched, and the
account's quota is free again."""

from __future__ import annotations

import dataclasses

import pytest

from tests.server.conftest import with_sync
from tests.server.test_media import chunk, png
from tests.server.wire import Device
from wxnet.clock import FakeClock
from wxnet.proto import wxnet_pb2 as pb
from wxnet.proto.errors import MMRet
from wxnet.server.app import Server
from wxnet.server.config import ServerConfig


@pytest.fixture
def config(config: ServerConfig) -> ServerConfig:
    return with_sync(config, upload_ttl=3600.0, uploads_per_account=2)


async def test_unfinished_uploads_expire(server: Server, clock: FakeClock) -> None:
    a = await Device.login(server.long_port, "alice")
    img = png()
    uploads = server.dispatcher.uploads
    for cid in ("u1", "u2"):
        r = await a.call("uploadmsgimg", chunk("alice", cid, img, 0, 1000), pb.UploadMsgImgResponse)
        assert r.base.ret == 0 and r.start_pos == 1000
    partial = uploads.media.partial(a.acc.uin, "u1", "img")
    assert partial.exists()
    r = await a.call("uploadmsgimg", chunk("alice", "u3", img, 0, 1000), pb.UploadMsgImgResponse)
    assert r.base.ret == MMRet.ERR_BUSY  # the quota of two
    clock.advance(1800)
    assert await uploads.sweep() == 0  # not yet
    clock.advance(1801)
    assert await uploads.sweep() == 2
    assert not partial.exists()
    assert await server.engine.store.uploads_of(a.acc.uin) == []
    # the quota is free again, and an expired upload starts over from 0
    r = await a.call("uploadmsgimg", chunk("alice", "u1", img, 1000, 1000), pb.UploadMsgImgResponse)
    assert r.base.ret == 0 and r.start_pos == 0
    await a.close()


async def test_an_unfinished_video_expires_with_its_thumbnail(
    server: Server, clock: FakeClock
) -> None:
    a = await Device.login(server.long_port, "alice")
    req = pb.UploadVideoRequest(
        client_msg_id="v1", to_user="alice", total_len=5000, start_pos=0, data=b"v" * 1000
    )
    r = await a.call("uploadvideo", req, pb.UploadMediaResponse)
    assert r.base.ret == 0 and r.start_pos == 1000 and not r.msg_id
    media = server.dispatcher.uploads.media
    partials = [media.partial(a.acc.uin, "v1", k) for k in ("video", "vthumb")]
    assert all(p.exists() for p in partials)  # the placeholder waits beside the video
    clock.advance(3601)
    assert await server.dispatcher.uploads.sweep() == 1
    assert not any(p.exists() for p in partials)
    await a.close()


def test_quota_settings_are_checked(config: ServerConfig) -> None:
    from wxnet.server.config import ConfigError, _validate

    for bad in (
        with_sync(config, upload_bytes_per_account=1000),
        with_sync(config, upload_ttl=0.0),
        with_sync(config, min_free_disk_bytes=-1),
        dataclasses.replace(config, web=dataclasses.replace(config.web, jslogin_burst=0)),
    ):
        with pytest.raises(ConfigError):
            _validate(bad)
