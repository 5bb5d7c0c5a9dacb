"""How the client's profile applies one sync item (:meth:`ProfileStore.apply_batch`): a
message, a contact or its removal, a revoke, a read receipt, the profile. Each function
runs inside the caller's transaction and returns whether the item was new to the profile.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable

from wxnet.client.rows import OutboxRow
from wxnet.proto import wxnet_pb2 as pb
from wxnet.proto.enums import CmdId, MsgType
from wxnet.proto.synckey import KEY_MSG

__all__ = ["UPLOADED_TYPES", "apply_item", "own_copy"]

#: Message types a client sends by upload (image, voice, video, file); every other type
#: goes with ``newsendmsg``.
UPLOADED_TYPES = frozenset({MsgType.IMAGE, MsgType.VOICE, MsgType.VIDEO, MsgType.APP})
STATUS_SENT = 2


def _talker(me: str, from_user: str, to_user: str) -> str:
    if to_user.endswith("@chatroom"):
        return to_user
    return to_user if from_user == me else from_user


def _add_msg(db: sqlite3.Connection, me: str, item: pb.CmdItem) -> bool:
    m = item.add_msg
    talker = _talker(me, m.from_user, m.to_user)
    cur = db.execute(
        "INSERT OR IGNORE INTO messages (msg_id, client_msg_id, talker, from_user, to_user,"
        " real_from, msg_type, content, create_time, status, thumb, media_len,"
        " voice_length, unread) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            m.msg_id,
            m.client_msg_id,
            talker,
            m.from_user,
            m.to_user,
            m.real_from,
            m.msg_type,
            m.content,
            m.create_time,
            m.status,
            bytes(m.img_buf) if m.img_buf else None,
            m.media_len,
            m.voice_length,
            0 if (m.real_from or m.from_user) == me else 1,
        ),
    )
    if m.client_msg_id and (m.real_from or m.from_user) == me:
        db.execute(
            "UPDATE outbox SET state = 'sent', msg_id = ?, create_time = ?, error = ''"
            " WHERE client_msg_id = ?",
            (m.msg_id, m.create_time, m.client_msg_id),
        )
    return cur.rowcount > 0


def _contact(db: sqlite3.Connection, me: str, item: pb.CmdItem) -> bool:
    c = item.contact
    db.execute(
        "INSERT OR REPLACE INTO contacts (user_name, nick_name, is_chatroom, members,"
        " owner) VALUES (?, ?, ?, ?, ?)",
        (
            c.user_name,
            c.nick_name,
            int(c.is_chatroom or c.user_name.endswith("@chatroom")),
            json.dumps(list(c.members)),
            c.owner,
        ),
    )
    return True


def _del_contact(db: sqlite3.Connection, me: str, item: pb.CmdItem) -> bool:
    db.execute("DELETE FROM contacts WHERE user_name = ?", (item.del_contact.user_name,))
    return True


def _revoke(db: sqlite3.Connection, me: str, item: pb.CmdItem) -> bool:
    r = item.revoke
    if r.msg_id:
        db.execute("UPDATE messages SET revoked = 1 WHERE msg_id = ?", (r.msg_id,))
    elif r.client_msg_id:
        db.execute("UPDATE messages SET revoked = 1 WHERE client_msg_id = ?", (r.client_msg_id,))
    return True


def _msg_status(db: sqlite3.Connection, me: str, item: pb.CmdItem) -> bool:
    s = item.msg_status
    if s.reader == me:
        db.execute(
            "UPDATE messages SET unread = 0 WHERE talker = ? AND msg_id <= ?",
            (s.talker, s.msg_id),
        )
    else:
        # The reader names the conversation from their side: in a 1:1 chat it is
        # us, so on our side the conversation is the reader.
        conv = s.talker if s.talker.endswith("@chatroom") else s.reader
        db.execute(
            "UPDATE messages SET status = ? WHERE talker = ? AND msg_id <= ?"
            " AND (from_user = ? OR real_from = ?)",
            (s.status or 4, conv, s.msg_id, me, me),
        )
    return True


def _user_info(db: sqlite3.Connection, me: str, item: pb.CmdItem) -> bool:
    u = item.user_info
    db.execute(
        "INSERT OR REPLACE INTO meta (key, value) VALUES ('profile', ?)",
        (json.dumps({"uin": u.uin, "user_name": u.user_name, "nick_name": u.nick_name}),),
    )
    return True


_APPLY: dict[str, Callable[[sqlite3.Connection, str, pb.CmdItem], bool]] = {
    "add_msg": _add_msg,
    "contact": _contact,
    "del_contact": _del_contact,
    "revoke": _revoke,
    "msg_status": _msg_status,
    "user_info": _user_info,
}


def own_copy(me: str, row: OutboxRow) -> pb.CmdItem:
    """The item the account's message log would hold for ``row``, a message ``me``
    sent with ``newsendmsg`` and the server acknowledged (the fields the server's
    AddMsg has: ``wxnet.sync.messages.Messaging.new_message``)."""
    add = pb.AddMsg(
        msg_id=row.msg_id,
        from_user=me,
        to_user=row.to_user,
        msg_type=row.msg_type,
        content=row.content,
        status=STATUS_SENT,
        create_time=row.create_time,
        client_msg_id=row.client_msg_id,
        real_from=me if row.to_user.endswith("@chatroom") else "",
    )
    return pb.CmdItem(cmd_id=CmdId.ADD_MSG, key=KEY_MSG, add_msg=add)


def apply_item(db: sqlite3.Connection, me: str, item: pb.CmdItem) -> bool:
    """Apply ``item`` for the account ``me`` inside the open transaction ``db``."""
    fn = _APPLY.get(item.WhichOneof("body") or "")
    if fn is None:
        return True  # an item type this client does not show: recorded as applied
    return fn(db, me, item)
