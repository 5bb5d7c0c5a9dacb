"""The client commands, in-process, against the real server running in a thread."""

from __future__ import annotations

import dataclasses
import json
import socket
from pathlib import Path

import pytest

from tests.client.conftest import PASSWORD, ServerThread, call
from tests.client.test_exchange import make_image

COMMANDS = [
    ["login"],
    ["logout"],
    ["contacts"],
    ["contact", "add"],
    ["contact", "requests"],
    ["contact", "accept"],
    ["group", "create"],
    ["group", "add"],
    ["group", "remove"],
    ["send"],
    ["send-image"],
    ["send-voice"],
    ["send-file"],
    ["send-video"],
    ["listen"],
    ["outbox"],
    ["outbox", "drop"],
    ["resend"],
    ["history"],
    ["revoke"],
    ["status"],
    ["chat"],
]


@pytest.mark.parametrize("argv", COMMANDS, ids=" ".join)
def test_every_command_has_help(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    code, _, _ = call(*argv, "--help")
    assert code == 0 and "--profile" in capsys.readouterr().out


def login(st: ServerThread, prof: Path, user: str) -> None:
    code, out, err = call(
        "login",
        "--profile",
        str(prof),
        "--server",
        st.url,
        "--user",
        user,
        "--password",
        PASSWORD,
    )
    assert code == 0, err
    assert f"logged in as {user}" in out


def lines(out: str) -> list[dict[str, object]]:
    return [json.loads(x) for x in out.splitlines() if x.strip()]


def test_a_session_from_the_command_line(server_thread: ServerThread, tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    login(server_thread, a, "alice")
    login(server_thread, b, "bob")
    pa, pb = ("--profile", str(a)), ("--profile", str(b))

    code, out, err = call("contact", "add", *pa, "bob", "--json")
    assert code == 0, err
    assert lines(out)[0]["user_name"] == "bob"
    code, out, err = call("send", *pa, "bob", "hello from the shell", "--json")
    assert code == 0, err
    sent = lines(out)[0]
    assert sent["state"] == "sent" and sent["msg_id"]
    make_image(tmp_path / "p.png", 5)
    code, out, err = call(
        "send-image", *pa, "bob", str(tmp_path / "p.png"), "--chunk-size", "1500", "--parallel", "3"
    )
    assert code == 0, err
    (tmp_path / "v.amr").write_bytes(b"\x02" * 2500)
    code, out, err = call("send-voice", *pa, "bob", str(tmp_path / "v.amr"), "--length-ms", "1500")
    assert code == 0, err
    code, out, err = call("send-voice", *pa, "bob", str(tmp_path / "v.amr"), "--cancel-after", "1")
    assert code == 0 and "cancelled" in out, err

    code, out, err = call("listen", *pb, "--json", "--count", "3", "--timeout", "20")
    assert code == 0, err
    msgs = [x for x in lines(out) if x.get("type") == "add_msg"]
    assert [m["msg_type"] for m in msgs] == [1, 3, 34]
    assert msgs[0]["content"] == "hello from the shell"

    code, out, err = call("history", *pb, "alice", "--json")
    assert code == 0, err
    hist = lines(out)
    assert [h["type"] for h in hist] == [1, 3, 34]
    assert hist[1]["has_thumb"] is True
    code, out, _ = call("history", *pb, "alice", "--offline")
    assert "alice: hello from the shell" in out and "[image" in out and "[voice 1500 ms" in out

    code, out, err = call("group", "create", *pa, "trio", "bob", "--json")
    assert code == 0, err
    room = str(lines(out)[0]["user_name"])
    code, out, err = call("group", "remove", *pa, room, "bob", "--json")
    assert code == 0 and "bob" not in lines(out)[0]["members"], err  # type: ignore[operator]
    code, out, err = call("group", "add", *pa, room, "bob")
    assert code == 0 and "bob" in out, err
    code, out, err = call("contacts", *pa, "--json")
    assert code == 0, err
    names = {c["user_name"] for c in lines(out)}
    assert {"bob", room} <= names

    code, out, err = call("revoke", *pa, str(sent["client_msg_id"]))
    assert code == 0, err
    code, out, err = call("status", *pa, "--json")
    assert code == 0, err
    st = lines(out)[0]
    assert st["user"] == "alice" and st["link"] == "long" and st["synckey"]
    code, out, _ = call("status", *pa, "--offline")
    assert "link:" in out and "synckey:" in out
    code, out, _ = call("outbox", *pa)
    assert code == 0 and out == "outbox empty\n"
    code, out, _ = call("outbox", *pa, "--json")
    assert code == 0 and out == ""
    code, out, err = call("logout", *pa)
    assert code == 0 and "logged out" in out, err
    code, _, err = call("send", *pa, "bob", "after logout")
    assert code == 1 and "not logged in" in err


def test_wrong_password_and_unknown_user_are_refused(
    server_thread: ServerThread, tmp_path: Path
) -> None:
    code, _, err = call(
        "login",
        "--profile",
        str(tmp_path / "x"),
        "--server",
        server_thread.url,
        "--user",
        "alice",
        "--password",
        "nope",
    )
    assert code == 1 and "the server said no" in err and "-3" in err
    code, _, err = call(
        "login",
        "--profile",
        str(tmp_path / "x"),
        "--server",
        server_thread.url,
        "--user",
        "mallory",
        "--password",
        "nope",
    )
    assert code == 1 and "the server said no" in err


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_unreachable_server_is_a_clear_error(server_thread: ServerThread, tmp_path: Path) -> None:
    code, _, err = call(
        "login",
        "--profile",
        str(tmp_path / "x"),
        "--server",
        f"http://127.0.0.1:{free_port()}",
        "--user",
        "alice",
        "--password",
        "pw",
    )
    assert code == 1 and "server unreachable" in err
    # A logged-in profile whose server went away: the send ends failed, with a way out.
    prof = tmp_path / "a"
    login(server_thread, prof, "alice")
    code, _, _ = call("contact", "add", "--profile", str(prof), "bob")
    assert code == 0
    server_thread.stop_listening()
    code, _, err = call("send", "--profile", str(prof), "bob", "nobody home")
    assert code == 1 and "failed" in err and "wxnet resend" in err
    code, out, _ = call("outbox", "--profile", str(prof), "--json")
    row = lines(out)[0]
    assert row["state"] == "failed" and row["content"] == "nobody home"
    server_thread.resume_listening()
    code, out, err = call("resend", "--profile", str(prof), str(row["client_msg_id"]))
    assert code == 0 and "sent" in out, err
    code, out, _ = call("outbox", "--profile", str(prof))
    assert out == "outbox empty\n"
    code, _, err = call("outbox", "drop", "--profile", str(prof), str(row["client_msg_id"]))
    assert code == 2 and "was sent" in err and "wxnet revoke" in err

    # A failed message can be dropped: gone from the outbox, never sent.
    server_thread.stop_listening()
    code, _, err = call("send", "--profile", str(prof), "bob", "never mind")
    assert code == 1
    code, out, _ = call("outbox", "--profile", str(prof), "--json")
    cid = str(lines(out)[0]["client_msg_id"])
    code, out, err = call("outbox", "drop", "--profile", str(prof), cid)
    assert code == 0 and f"dropped {cid}" in out, err
    code, out, _ = call("outbox", "--profile", str(prof))
    assert out == "outbox empty\n"
    code, _, err = call("outbox", "drop", "--profile", str(prof), cid)
    assert code == 2 and "no message" in err
    server_thread.resume_listening()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["send-image", "bob", "/nonexistent.png"], "no such file"),
        (["login", "--server", "ftp://x", "--user", "a", "--password", "b"], "http://"),
        (["send", "bob", ""], "empty"),
        (["resend", "nope"], "not logged in"),
    ],
)
def test_bad_input_is_an_error(argv: list[str], message: str, tmp_path: Path) -> None:
    code, _, err = call(*argv[:1], "--profile", str(tmp_path / "p"), *argv[1:])
    assert code in (1, 2) and message in err


def test_bad_profile_dir(tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_text("")
    code, _, err = call("outbox", "--profile", str(f))
    assert code == 2 and "cannot open profile" in err


def test_contact_requests_from_the_command_line(
    server_thread: ServerThread, tmp_path: Path
) -> None:
    """``contact add`` sends a request; the other side lists and accepts it."""
    assert server_thread.server is not None
    engine = server_thread.server.engine
    engine.config = dataclasses.replace(engine.config, contacts="request")
    pa, pb_ = tmp_path / "alice", tmp_path / "bob"
    login(server_thread, pa, "alice")
    login(server_thread, pb_, "bob")
    code, out, err = call(
        "contact", "add", "bob", "--greeting", "it is alice", "--profile", str(pa)
    )
    assert code == 0, err
    assert "friend request sent to bob" in out
    code, out, _ = call("send", "bob", "too early", "--profile", str(pa))
    assert code != 0  # not a contact yet
    code, out, err = call("contact", "requests", "--json", "--profile", str(pb_))
    assert code == 0, err
    assert [(r["user_name"], r["greeting"]) for r in lines(out)] == [("alice", "it is alice")]
    code, out, err = call("contact", "accept", "carol", "--profile", str(pb_))
    assert code != 0 and "has not asked" in err
    code, out, err = call("contact", "accept", "alice", "--profile", str(pb_))
    assert code == 0, err
    assert out.startswith("alice")
    code, out, _ = call("contact", "requests", "--profile", str(pb_))
    assert code == 0 and out == ""
    code, out, err = call("send", "bob", "hello", "--profile", str(pa))
    assert code == 0, err


def test_refusals_group_names_and_a_true_status(
    server_thread: ServerThread, tmp_path: Path
) -> None:
    a = tmp_path / "a"
    login(server_thread, a, "alice")
    pa = ("--profile", str(a))
    # A refusal is not the network's fault: no "network is poor" (S13), it says what.
    code, _, err = call("send", *pa, "carol", "not a contact yet")
    assert code == 1 and "the server refused message" in err and "to carol" in err, err
    assert "network is poor" not in err and "wxnet outbox drop" in err
    code, out, _ = call("outbox", *pa, "--json")
    row = lines(out)[0]
    assert row["state"] == "failed" and row["error_code"] is not None

    # Groups by their name, where it is unique.
    for who in ("bob", "carol"):
        assert call("contact", "add", *pa, who)[0] == 0
    code, out, err = call("group", "create", *pa, "trio", "bob", "carol", "--json")
    assert code == 0, err
    trio = str(lines(out)[0]["user_name"])
    code, out, err = call("send", *pa, "trio", "hello trio", "--json")
    assert code == 0, err
    assert lines(out)[0]["to"] == trio
    code, out, err = call("history", *pa, "trio")
    assert code == 0 and "hello trio" in out, err
    code, out, err = call("group", "remove", *pa, "trio", "carol", "--json")
    assert code == 0 and lines(out)[0]["members"] == ["alice", "bob"], (out, err)
    code, out, err = call("group", "create", *pa, "trio", "bob", "--json")
    assert code == 0, err
    other = str(lines(out)[0]["user_name"])
    code, _, err = call("send", *pa, "trio", "which one?")
    assert code == 2 and "2 of your groups are named 'trio'" in err
    assert trio in err and other in err
    code, _, err = call("send", *pa, trio, "by id it is clear")
    assert code == 0, err

    # status says what is true: the short-link address not used yet, no heartbeat yet.
    code, out, err = call("status", *pa)
    assert code == 0, err
    assert "link:           long" in out
    assert f"short address:  127.0.0.1:{server_thread.server.http_port} (not used yet)" in out  # type: ignore[union-attr]
    assert "last heartbeat: none yet" in out
    # The server goes away: not "short", but none, and why.
    server_thread.stop_listening()
    code, out, err = call("status", *pa)
    assert code == 0, err
    assert "link:           none (the server did not answer over either link)" in out, out
    assert "last error:" in out
    code, out, _ = call("status", *pa, "--offline")
    assert "link:           none" in out
    server_thread.resume_listening()
    # A profile on the short link only: that link is in use, and status says so.
    s = tmp_path / "s"
    code, _, err = call("login", "--profile", str(s), "--server", server_thread.url,
                        "--user", "bob", "--password", PASSWORD, "--no-long-link")  # fmt: skip
    assert code == 0, err
    code, out, err = call("status", "--profile", str(s))
    assert code == 0, err
    assert "link:           short (no long link" in out, out
    assert "(in use)" in out


def test_files_and_videos_from_the_command_line(
    server_thread: ServerThread, tmp_path: Path
) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    login(server_thread, a, "alice")
    login(server_thread, b, "bob")
    pa, pb = ("--profile", str(a)), ("--profile", str(b))
    code, _, err = call("contact", "add", *pa, "bob")
    assert code == 0, err
    doc = bytes(range(256)) * 40
    (tmp_path / "plan v2.txt").write_bytes(doc)
    code, out, err = call("send-file", *pa, "bob", str(tmp_path / "plan v2.txt"), "--json")
    assert code == 0, err
    file_id = lines(out)[0]["msg_id"]
    clip = b"\x00\x00\x00\x18ftypmp42" + bytes(5000)
    (tmp_path / "c.mp4").write_bytes(clip)
    make_image(tmp_path / "t.png", 6)
    code, out, err = call(
        "send-video",
        *pa,
        "bob",
        str(tmp_path / "c.mp4"),
        "--thumb",
        str(tmp_path / "t.png"),
        "--seconds",
        "4",
        "--chunk-size",
        "2000",
    )
    assert code == 0 and "sent" in out, err
    code, out, err = call("send-video", *pa, "bob", str(tmp_path / "c.mp4"), "--json")
    assert code == 0, err  # no --thumb: the server's placeholder
    plain_id = lines(out)[0]["msg_id"]
    code, _, err = call("send-video", *pa, "bob", str(tmp_path / "c.mp4"), "--thumb", "/nope.png")
    assert code == 2 and "no such file" in err

    saved = tmp_path / "saved"
    code, out, err = call(
        "listen", *pb, "--json", "--count", "3", "--timeout", "20", "--save", str(saved)
    )
    assert code == 0, err
    msgs = [x for x in lines(out) if x.get("type") == "add_msg"]
    assert [m["msg_type"] for m in msgs] == [49, 43, 43]
    assert msgs[0]["file_name"] == "plan v2.txt" and msgs[0]["app_msg_type"] == 6
    assert msgs[0]["saved"] == [str(saved / f"{file_id}-plan v2.txt")]
    assert (saved / f"{file_id}-plan v2.txt").read_bytes() == doc
    assert (saved / f"{plain_id}.mp4").read_bytes() == clip
    assert (saved / f"{plain_id}.thumb.jpg").read_bytes()[:2] == b"\xff\xd8"

    code, out, err = call("history", *pb, "alice", "--offline")
    assert code == 0, err
    assert "[file plan v2.txt, 10240 bytes]" in out and "[video 5012 bytes, thumbnail]" in out
    again = tmp_path / "again"
    code, out, err = call("history", *pb, "alice", "--save", str(again))
    assert code == 0, err
    assert out.count("    saved ") == 5  # the file, and each video with its thumbnail
    assert sorted(p.name for p in again.iterdir()) == sorted(p.name for p in saved.iterdir())
    assert (again / f"{file_id}-plan v2.txt").read_bytes() == doc
