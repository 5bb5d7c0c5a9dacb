"""Two users and a second device of one user exchange text, images and voice in 1:1
chats and a group, against the real server on loopback; every device sees everything
exactly once."""

from __future__ import annotations

import io
import random
from pathlib import Path
from typing import Any

from PIL import Image

from tests.client.conftest import FAST, PASSWORD, Clients, history_ids, until
from wxnet.client.events import ItemReceived
from wxnet.client.sdk import MSG_IMAGE, MSG_TEXT, MSG_VOICE, ClientConfig
from wxnet.proto import wxnet_pb2 as pb
from wxnet.proto.synckey import KEY_MSG
from wxnet.server.app import Server


def make_image(path: Path, seed: int, size: tuple[int, int] = (160, 120)) -> bytes:
    rng = random.Random(seed)
    img = Image.new("RGB", size)
    img.putdata(
        [
            (rng.randrange(256), rng.randrange(256), rng.randrange(256))
            for _ in range(size[0] * size[1])
        ]
    )
    buf = io.BytesIO()
    img.save(buf, "PNG")
    path.write_bytes(buf.getvalue())
    return buf.getvalue()


def config(server: Server, **changes: object) -> ClientConfig:
    return ClientConfig(server_url=f"http://127.0.0.1:{server.http_port}").replace(
        **{**FAST, **changes}
    )


async def test_everyone_sees_everything_once(
    server: Server, clients: Clients, tmp_path: Path
) -> None:
    # 1.5 KB image chunks, 4 in flight: the seed's shape (S24).
    cfg = config(server, image_chunk=1500, parallel_chunks=4, voice_chunk=1500)
    a1 = await clients.new("alice", "phone", cfg)
    a2 = await clients.new("alice", "tablet", cfg)
    bob = await clients.new("bob", "phone", cfg)
    carol = await clients.new("carol", "phone", cfg)
    for c in (a1, a2, bob, carol):
        assert c.link_kind == "long", c.last_error
    await a1.add_contact("bob")
    await a1.add_contact("carol")
    room = await a1.create_group("team", ["bob", "carol"])
    assert room.user_name.endswith("@chatroom")

    sent: list[tuple[str, int]] = []  # (talker from alice's view, msg_id)
    r = await a1.send_text("bob", "hello bob")
    assert r.state == "sent"
    sent.append(("bob", r.msg_id))
    r = await bob.send_text("alice", "hi alice")
    sent.append(("bob", r.msg_id))
    img = make_image(tmp_path / "cat.png", 1)
    r = await a2.send_image("bob", tmp_path / "cat.png")
    assert r.state == "sent", r.error
    img_id = r.msg_id
    sent.append(("bob", img_id))
    voice = bytes(random.Random(2).randrange(256) for _ in range(4000))
    (tmp_path / "v.amr").write_bytes(voice)
    r = await bob.send_voice("alice", tmp_path / "v.amr", voice_length_ms=2000)
    assert r.state == "sent", r.error
    voice_id = r.msg_id
    sent.append(("bob", voice_id))
    r = await carol.send_text(room.user_name, "hello team")
    sent.append((room.user_name, r.msg_id))
    make_image(tmp_path / "dog.png", 3, (90, 90))
    r = await bob.send_image(room.user_name, tmp_path / "dog.png")
    assert r.state == "sent", r.error
    sent.append((room.user_name, r.msg_id))

    one_to_one = sorted(m for t, m in sent if t == "bob")
    group = sorted(m for t, m in sent if t != "bob")

    def done() -> bool:
        return (
            sorted(history_ids(a1, "bob")) == one_to_one
            and sorted(history_ids(a2, "bob")) == one_to_one
            and sorted(history_ids(bob, "alice")) == one_to_one
            and all(sorted(history_ids(c, room.user_name)) == group for c in (a1, a2, bob, carol))
        )

    await until([a1, a2, bob, carol], done, "every device to hold every message")
    # Exactly once: a full re-sync of a device that already has it all adds nothing.
    assert await a1.sync() == []
    assert carol.store.history("bob") == []  # carol is not in the 1:1 chat

    got = await bob.download_image(img_id)
    assert got == img
    m = bob.store.message(img_id)
    assert m is not None and m.msg_type == MSG_IMAGE and m.has_thumb
    thumb = bob.store.thumb(img_id)
    assert thumb is not None
    with Image.open(io.BytesIO(thumb)) as t:
        assert max(t.size) <= 100
    assert await a1.download_voice(voice_id) == voice
    v = a1.store.message(voice_id)
    assert v is not None and v.msg_type == MSG_VOICE and v.voice_length == 2000
    texts = [m.content for m in carol.store.history(room.user_name) if m.msg_type == MSG_TEXT]
    assert texts == ["hello team"]


async def test_group_membership_changes_reach_members(server: Server, clients: Clients) -> None:
    cfg = config(server)
    alice = await clients.new("alice", config=cfg)
    carol = await clients.new("carol", config=cfg)
    await alice.add_contact("bob")
    await alice.add_contact("carol")
    room = await alice.create_group("pair", ["bob"])
    await alice.modify_group(room.user_name, 1, ["carol"])

    def carol_knows() -> bool:
        return any(
            c.user_name == room.user_name and "carol" in c.members for c in carol.store.contacts()
        )

    await until(carol, carol_knows, "carol to see the group")
    changed = await alice.modify_group(room.user_name, 2, ["bob"])
    assert "bob" not in changed.members


async def test_read_receipt_and_revoke(server: Server, clients: Clients) -> None:
    cfg = config(server)
    alice = await clients.new("alice", config=cfg)
    bob = await clients.new("bob", config=cfg)
    await alice.add_contact("bob")
    r = await alice.send_text("bob", "read me")
    await until(bob, lambda: history_ids(bob, "alice") == [r.msg_id], "bob to get it")
    await bob.mark_read("alice")

    def read() -> bool:
        m = alice.store.message(r.msg_id)
        return m is not None and m.status >= 4

    await until(alice, read, "alice to see the read receipt")
    await alice.revoke(r.client_msg_id)

    def revoked() -> bool:
        m = bob.store.message(r.msg_id)
        return m is not None and m.revoked

    await until(bob, revoked, "bob to see the revoke")


async def test_voice_cancel_delivers_nothing(
    server: Server, clients: Clients, tmp_path: Path
) -> None:
    cfg = config(server, voice_chunk=500)
    alice = await clients.new("alice", config=cfg)
    bob = await clients.new("bob", config=cfg)
    await alice.add_contact("bob")
    (tmp_path / "v.amr").write_bytes(b"\x01" * 3000)
    await alice.cancel_voice("bob", tmp_path / "v.amr", chunks=2)
    assert alice.store.outbox(("sending", "failed", "sent")) == []
    r = await alice.send_text("bob", "after")
    await until(bob, lambda: history_ids(bob, "alice") == [r.msg_id], "only the text")


async def test_image_upload_resumes_from_the_servers_offset(
    server: Server, clients: Clients, tmp_path: Path
) -> None:
    """An upload begun elsewhere (a killed process: half the chunks stored) is resumed
    from the offset the server reports, not started over (docs/client.md, "Sending")."""
    cfg = config(server, image_chunk=1000, parallel_chunks=3)
    alice = await clients.new("alice", config=cfg)
    bob = await clients.new("bob", config=cfg)
    await alice.add_contact("bob")
    data = make_image(tmp_path / "big.png", 9, (120, 100))
    total = len(data)
    row = alice.store.queue("bob", MSG_IMAGE, media_path=str(tmp_path / "big.png"))
    half = (total // 1000 // 2) * 1000
    for off in range(0, half, 1000):  # what the killed process got through
        await alice.request(
            "uploadmsgimg",
            pb.UploadMsgImgRequest(
                client_img_id=row.client_msg_id,
                to_user="bob",
                total_len=total,
                start_pos=off,
                data=data[off : off + 1000],
            ),
            pb.UploadMsgImgResponse,
        )
    calls: list[int] = []
    real = alice.links.request

    async def counting(name: str, req: Any, resp: Any, **kw: Any) -> Any:
        if name == "uploadmsgimg":
            calls.append(req.start_pos)
        return await real(name, req, resp, **kw)

    alice.links.request = counting  # type: ignore[method-assign,assignment]
    done = await alice.resend(row.client_msg_id)
    assert done.state == "sent", done.error
    chunks = -(-total // 1000)
    assert min(calls) == 0 and len(calls) <= chunks - half // 1000 + 1
    assert all(off >= half for off in calls[1:])
    assert await bob.download_image(done.msg_id) == data


async def test_own_messages_from_the_reply_and_after_a_new_login(
    server: Server, clients: Clients
) -> None:
    """S17: a device alone on its account is not sent its own messages back; the SDK
    shows them from the send's reply, once. A device whose session ended while the
    account sent from another one gets those messages when it logs in again."""
    cfg = config(server)
    a1 = await clients.new("alice", "phone", cfg)
    bob = await clients.new("bob", "phone", cfg)
    await a1.add_contact("bob")
    uin = a1.session.uin if a1.session else 0
    head = await server.engine.store.head(uin, KEY_MSG, fresh=True)
    events = a1.subscribe()
    r = await a1.send_text("bob", "alone")
    own = [
        ev.item.add_msg.msg_id
        for ev in [events.get_nowait() for _ in range(events.qsize())]
        if isinstance(ev, ItemReceived)
    ]
    assert own == [r.msg_id]  # in `listen` from the reply
    assert history_ids(a1, "bob") == [r.msg_id]
    await a1.sync()
    assert history_ids(a1, "bob") == [r.msg_id]  # nothing came back by sync
    assert await server.engine.store.head(uin, KEY_MSG, fresh=True) == head  # no new key
    # the phone's session ends on the server (expired, say) while its profile keeps it
    assert a1.session is not None
    await server.engine.logout(await server.engine.session(a1.session.session_key, uin))
    a2 = await clients.new("alice", "pad", cfg)
    r2 = await a2.send_text("bob", "while the phone was out")
    await until(bob, lambda: len(history_ids(bob, "alice")) == 2, "bob's two messages")
    await a1.login("alice", PASSWORD)
    await a1.sync()
    assert history_ids(a1, "bob") == [r.msg_id, r2.msg_id]
    assert history_ids(a2, "bob") == [r.msg_id, r2.msg_id]  # newinit: the history, own included
