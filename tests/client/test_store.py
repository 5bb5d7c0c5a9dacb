from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from wxnet.client.store import CMD_ADD_MSG, CMD_MOD_CONTACT, ProfileStore
from wxnet.proto import wxnet_pb2 as pb


def add_msg(seq: int, msg_id: int, frm: str = "bob", to: str = "alice") -> pb.CmdItem:
    return pb.CmdItem(
        cmd_id=CMD_ADD_MSG,
        key=2,
        seq=seq,
        add_msg=pb.AddMsg(
            msg_id=msg_id,
            from_user=frm,
            to_user=to,
            msg_type=1,
            content=f"m{msg_id}",
            create_time=1000 + msg_id,
            client_msg_id=f"c{msg_id}",
        ),
    )


def test_batch_fetched_twice_is_applied_once(tmp_path: Path) -> None:
    store = ProfileStore.open(tmp_path)
    batch = [
        add_msg(1, 11),
        add_msg(2, 12),
        pb.CmdItem(
            cmd_id=CMD_MOD_CONTACT,
            key=3,
            seq=1,
            contact=pb.Contact(user_name="bob", nick_name="Bob"),
        ),
    ]
    first = store.apply_batch("alice", batch, b"k1")
    assert [i.seq for i in first] == [1, 2, 1]
    assert store.apply_batch("alice", batch, b"k1") == []
    again = store.apply_batch("alice", [*batch, add_msg(3, 13)], b"k2")
    assert [(i.key, i.seq) for i in again] == [(2, 3)]
    assert store.synckey() == b"k2"
    assert [m.msg_id for m in store.history("bob")] == [11, 12, 13]
    assert store.contacts()[0].nick_name == "Bob"
    store.close()


def test_outbox_states_and_resend_keep_the_id(tmp_path: Path) -> None:
    store = ProfileStore.open(tmp_path)
    row = store.queue("bob", 1, "hi")
    assert row.state == "sending" and row.client_msg_id
    store.note_attempt(row.client_msg_id)
    store.mark_failed(row.client_msg_id, "timeout")
    failed = store.outbox(("failed",))
    assert [r.client_msg_id for r in failed] == [row.client_msg_id]
    again = store.mark_sending(row.client_msg_id)
    assert again is not None and again.state == "sending" and again.attempts == 0
    store.mark_sent(row.client_msg_id, 99, 1234)
    store.mark_failed(row.client_msg_id, "late failure")  # never downgrades a sent row
    done = store.outbox_row(row.client_msg_id)
    assert done is not None and done.state == "sent" and done.msg_id == 99
    assert store.outbox() == []
    store.close()


def test_own_message_from_another_device_marks_outbox_sent(tmp_path: Path) -> None:
    store = ProfileStore.open(tmp_path)
    row = store.queue("bob", 1, "hi")
    item = add_msg(5, 77, frm="alice", to="bob")
    item.add_msg.client_msg_id = row.client_msg_id
    store.apply_batch("alice", [item], b"k")
    done = store.outbox_row(row.client_msg_id)
    assert done is not None and done.state == "sent" and done.msg_id == 77
    assert store.history("bob")[0].talker == "bob"
    store.close()


def test_unusable_profile_dir_is_a_clear_error(tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_text("x")
    try:
        ProfileStore.open(f)
    except Exception as exc:
        assert "cannot open profile" in str(exc)
    else:
        raise AssertionError("expected ProfileError")


CHILD = textwrap.dedent(
    """
    import sys
    from wxnet.client.store import ProfileStore, CMD_ADD_MSG
    from wxnet.proto import wxnet_pb2 as pb
    store = ProfileStore.open(sys.argv[1])
    for i in range(1, 100000):
        row = store.queue("bob", 1, f"text {i}")
        print("queued", row.client_msg_id, flush=True)
        item = pb.CmdItem(cmd_id=CMD_ADD_MSG, key=2, seq=i, add_msg=pb.AddMsg(
            msg_id=i, from_user="bob", to_user="alice", msg_type=1, content="x", create_time=i))
        store.apply_batch("alice", [item], f"key{i}".encode())
        print("applied", i, flush=True)
    """
)


def test_kill_at_any_point_loses_nothing_committed(tmp_path: Path) -> None:
    for stop_after in (1, 7, 40):
        prof = tmp_path / f"p{stop_after}"
        proc = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(prof)], stdout=subprocess.PIPE, text=True
        )
        assert proc.stdout is not None
        queued: list[str] = []
        applied = 0
        lines = 0
        while lines < stop_after * 2:
            line = proc.stdout.readline()
            assert line, "child died early"
            kind, value = line.split()
            if kind == "queued":
                queued.append(value)
            else:
                applied = int(value)
            lines += 1
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
        store = ProfileStore.open(prof)
        ids = {r.client_msg_id for r in store.outbox()}
        assert set(queued) <= ids
        assert store.message_count() >= applied
        key = store.synckey().decode()
        assert int(key.removeprefix("key")) >= applied
        # The key and the items it covers were written together.
        assert store.message_count() == int(key.removeprefix("key"))
        store.close()
