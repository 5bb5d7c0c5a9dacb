"""Drive an unmodified itchat (1.3.10 or itchat-uos 1.4.1) against a wxnet server.

Run with the client's own interpreter: ``python itchat_harness.py BASE_URL WORKDIR [hot]``
(``hot``: ``hotReload=True``, the login kept in WORKDIR/itchat.pkl and resumed from it).
Events go to stdout as JSON lines; commands come from stdin as JSON lines:
``{"op": "send", "to": NICK, "text": ...}``, ``{"op": "image", "to": NICK, "path": ...}``,
``{"op": "revoke", "to": NICK, "id": MSGID}``, ``{"op": "alias", "to": NICK, "name": ...}``,
``{"op": "pin", "to": NICK, "pinned": BOOL}``, ``{"op": "file", "to": NICK, "path": ...}``,
``{"op": "video", "to": NICK, "path": ...}``, ``{"op": "contacts"}``, ``{"op": "logout"}``.
This file runs under the client's Python, not wxnet's: it uses only the standard library
and itchat.
"""

import html
import json
import os
import sys
import threading
from typing import Any

BASE, WORKDIR = sys.argv[1], sys.argv[2]
HOT = sys.argv[3:] == ["hot"]
os.chdir(WORKDIR)  # itchat may write QR.png / itchat.pkl into the working directory

import itchat  # type: ignore[import-not-found]  # noqa: E402
from itchat.content import (  # type: ignore[import-not-found]  # noqa: E402
    ATTACHMENT,
    NOTE,
    PICTURE,
    TEXT,
    VIDEO,
)

itchat.config.BASE_URL = BASE
itchat.utils.htmlParser.unescape = html.unescape  # research 10.1 (a no-op on itchat-uos)
_out = threading.Lock()


def emit(**kw: Any) -> None:
    with _out:
        sys.stdout.write(json.dumps(kw, ensure_ascii=False) + "\n")
        sys.stdout.flush()


@itchat.msg_register([TEXT, PICTURE, NOTE, ATTACHMENT, VIDEO], isFriendChat=True, isGroupChat=True)  # type: ignore[untyped-decorator]
def on_message(msg: Any) -> None:
    ev = {
        "event": "message",
        "type": msg["Type"],
        "from": msg["FromUserName"],
        "to": msg["ToUserName"],
        "group": "@@" in msg["FromUserName"] or "@@" in msg["ToUserName"],
        "actual": msg.get("ActualNickName", ""),
        "id": msg.get("MsgId", ""),
    }
    if msg["Type"] in (PICTURE, ATTACHMENT, VIDEO):  # Text downloads it
        data = msg["Text"]()
        ev["size"] = len(data)
        ev["head"] = data[:4].hex()
        ev["name"] = msg.get("FileName", "")
    else:
        ev["text"] = msg["Text"]
    if msg["Type"] == NOTE:
        ev["content"] = msg["Content"]
    emit(**ev)


def user_name(nick: str) -> str:
    for c in itchat.get_friends() + itchat.get_chatrooms():
        if c["NickName"] == nick:
            return str(c["UserName"])
    raise KeyError(nick)


def ret(r: Any) -> int:
    return int(r["BaseResponse"]["Ret"])


itchat.auto_login(
    hotReload=HOT,
    qrCallback=lambda uuid, status, qrcode: emit(event="qr", uuid=uuid, status=status),
    loginCallback=lambda: emit(event="login"),
    exitCallback=lambda: emit(event="exit"),
)
emit(event="ready")  # auto_login returned: with hotReload, itchat.pkl is written
itchat.run(blockThread=False)
for line in sys.stdin:
    cmd = json.loads(line)
    op = cmd["op"]
    try:
        if op == "contacts":
            emit(
                event="contacts",
                me=itchat.search_friends()["UserName"],
                friends=[f["NickName"] for f in itchat.get_friends(update=True)[1:]],
                remarks={f["NickName"]: f["RemarkName"] for f in itchat.get_friends()[1:]},
                rooms=[
                    {"nick": r["NickName"], "members": len(r["MemberList"])}
                    for r in itchat.get_chatrooms(update=True)
                ],
            )
        elif op == "room":
            room = itchat.update_chatroom(user_name(cmd["nick"]), detailedMember=True)
            emit(event="room", members=sorted(m["NickName"] for m in room["MemberList"]))
        elif op == "send":
            r = itchat.send(cmd["text"], toUserName=user_name(cmd["to"]))
            emit(event="sent", ret=ret(r), id=r.get("MsgID", ""))
        elif op == "alias":
            emit(event="oplog", ret=ret(itchat.set_alias(user_name(cmd["to"]), cmd["name"])))
        elif op == "pin":
            r = itchat.set_pinned(user_name(cmd["to"]), cmd["pinned"])
            emit(event="oplog", ret=ret(r))
        elif op == "revoke":
            r = itchat.revoke(cmd["id"], user_name(cmd["to"]))
            emit(event="revoked", ret=ret(r))
        elif op == "image":
            r = itchat.send_image(cmd["path"], toUserName=user_name(cmd["to"]))
            emit(event="sent", ret=ret(r))
        elif op == "file":
            r = itchat.send_file(cmd["path"], toUserName=user_name(cmd["to"]))
            emit(event="sent", ret=ret(r))
        elif op == "video":
            r = itchat.send_video(cmd["path"], toUserName=user_name(cmd["to"]))
            emit(event="sent", ret=ret(r))
        elif op == "logout":
            itchat.logout()
            emit(event="loggedout")
            break
    except Exception as exc:  # report, keep going: the test decides
        emit(event="error", op=op, error=repr(exc))
