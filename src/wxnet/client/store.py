"""The client's profile: one SQLite file in ``--profile DIR`` (S16, S19, S23).

What it keeps, and why it survives a kill at any point:

* **session** (uin, session key, user name, server settings) and the **SyncKey**;
* **outbox**: a message gets its ClientMsgId when it is queued, and the row is committed
  before the first byte goes out; states ``sending`` -> ``sent`` | ``failed``. After a
  crash a ``sending`` row is simply sent again with the same ClientMsgId, and the
  server's dedup on (sender, ClientMsgId) makes that safe (S23);
* **inbox**: the items of a sync batch, the messages and contacts they carry and the new
  SyncKey are written in one transaction; each item is recorded by (key type, seq), so
  a batch fetched twice (killed before the server heard the commit, S19) is applied once;
* **history** (messages by conversation) and **contacts**; the cached newgetdns list;
  the learned heartbeat intervals; a small status record for ``wxnet status``.

Each method is one transaction. SQLite in WAL mode with ``synchronous=FULL``.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from wxnet.client.inbox import UPLOADED_TYPES, apply_item, own_copy
from wxnet.client.rows import (
    MESSAGE_COLUMNS,
    AppliedItem,
    ContactRow,
    MessageRow,
    OutboxRow,
    ProfileError,
    SessionInfo,
    message_row,
    new_client_msg_id,
)
from wxnet.proto import wxnet_pb2 as pb
from wxnet.proto.enums import CmdId, MsgType
from wxnet.proto.synckey import KEY_MSG

__all__ = [
    "CMD_ADD_MSG",
    "CMD_DEL_CONTACT",
    "CMD_MOD_CONTACT",
    "CMD_MOD_MSG_STATUS",
    "CMD_MOD_USER_INFO",
    "CMD_REVOKE",
    "AppliedItem",
    "ContactRow",
    "MessageRow",
    "OutboxRow",
    "ProfileError",
    "ProfileStore",
    "SessionInfo",
    "new_client_msg_id",
]

# The sync item kinds, as wxnet.proto.enums.CmdId defines them (names kept for callers).
CMD_MOD_USER_INFO = CmdId.MOD_USER_INFO
CMD_MOD_CONTACT = CmdId.MOD_CONTACT
CMD_DEL_CONTACT = CmdId.DEL_CONTACT
CMD_ADD_MSG = CmdId.ADD_MSG
CMD_MOD_MSG_STATUS = CmdId.MOD_MSG_STATUS
CMD_REVOKE = CmdId.REVOKE

DB_NAME = "profile.sqlite3"

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS outbox (
  client_msg_id TEXT PRIMARY KEY,
  to_user TEXT NOT NULL,
  msg_type INTEGER NOT NULL,
  content TEXT NOT NULL DEFAULT '',
  media_path TEXT NOT NULL DEFAULT '',
  voice_length INTEGER NOT NULL DEFAULT 0,
  state TEXT NOT NULL CHECK (state IN ('sending', 'sent', 'failed')),
  attempts INTEGER NOT NULL DEFAULT 0,
  msg_id INTEGER NOT NULL DEFAULT 0,
  create_time INTEGER NOT NULL DEFAULT 0,
  queued_at REAL NOT NULL,
  updated_at REAL NOT NULL,
  error TEXT NOT NULL DEFAULT '',
  error_code INTEGER  -- the server's MM result when it refused; NULL: no answer (network)
);
CREATE TABLE IF NOT EXISTS applied (
  key INTEGER NOT NULL, seq INTEGER NOT NULL, PRIMARY KEY (key, seq)
);
CREATE TABLE IF NOT EXISTS messages (
  msg_id INTEGER PRIMARY KEY,
  client_msg_id TEXT NOT NULL DEFAULT '',
  talker TEXT NOT NULL,
  from_user TEXT NOT NULL,
  to_user TEXT NOT NULL,
  real_from TEXT NOT NULL DEFAULT '',
  msg_type INTEGER NOT NULL,
  content TEXT NOT NULL DEFAULT '',
  create_time INTEGER NOT NULL,
  status INTEGER NOT NULL DEFAULT 0,
  revoked INTEGER NOT NULL DEFAULT 0,
  thumb BLOB,
  media_len INTEGER NOT NULL DEFAULT 0,
  voice_length INTEGER NOT NULL DEFAULT 0,
  unread INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS messages_talker ON messages (talker, create_time, msg_id);
CREATE TABLE IF NOT EXISTS contacts (
  user_name TEXT PRIMARY KEY,
  nick_name TEXT NOT NULL DEFAULT '',
  is_chatroom INTEGER NOT NULL DEFAULT 0,
  members TEXT NOT NULL DEFAULT '[]',
  owner TEXT NOT NULL DEFAULT ''
);
"""


class ProfileStore:
    """The profile database. Open with ``ProfileStore.open(dir)``; close with :meth:`close`."""

    def __init__(self, db: sqlite3.Connection, path: Path) -> None:
        self._db = db
        self.path = path

    @classmethod
    def open(cls, directory: str | Path) -> ProfileStore:
        d = Path(directory)
        try:
            d.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(d / DB_NAME, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute("PRAGMA busy_timeout=5000")
            db.executescript(SCHEMA)
            cols = {r[1] for r in db.execute("PRAGMA table_info(outbox)")}
            if "error_code" not in cols:  # a profile from before the column existed
                db.execute("ALTER TABLE outbox ADD COLUMN error_code INTEGER")
        except (OSError, sqlite3.Error) as exc:
            raise ProfileError(f"cannot open profile {d}: {exc}") from None
        return cls(db, d)

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # ---- meta ------------------------------------------------------------------------

    def get(self, key: str, default: str | None = None) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return str(row[0]) if row else default

    def put(self, **values: str | None) -> None:
        with self._tx() as db:
            for k, v in values.items():
                if v is None:
                    db.execute("DELETE FROM meta WHERE key = ?", (k,))
                else:
                    db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (k, v))

    def get_json(self, key: str) -> Any:
        raw = self.get(key)
        return None if raw is None else json.loads(raw)

    def put_json(self, key: str, value: Any) -> None:
        self.put(**{key: json.dumps(value, sort_keys=True)})

    def device_id(self) -> str:
        dev = self.get("device_id")
        if dev is None:
            dev = secrets.token_hex(8)
            self.put(device_id=dev)
        return dev

    # ---- session ---------------------------------------------------------------------

    def save_session(self, s: SessionInfo) -> None:
        self.put_json(
            "session",
            {
                "uin": s.uin,
                "session_key": s.session_key,
                "user_name": s.user_name,
                "nick_name": s.nick_name,
                "device_id": s.device_id,
            },
        )

    def session(self) -> SessionInfo | None:
        raw = self.get_json("session")
        if not isinstance(raw, dict):
            return None
        return SessionInfo(
            int(raw["uin"]),
            str(raw["session_key"]),
            str(raw["user_name"]),
            str(raw.get("nick_name", "")),
            str(raw.get("device_id", "")),
        )

    def clear_session(self) -> None:
        self.put(session=None)

    def synckey(self) -> bytes:
        raw = self.get("synckey")
        return bytes.fromhex(raw) if raw else b""

    def reset_sync(self) -> None:
        """Forget the SyncKey and the applied-item records (before a newinit)."""
        with self._tx() as db:
            db.execute("DELETE FROM meta WHERE key = 'synckey'")
            db.execute("DELETE FROM applied")

    # ---- outbox ----------------------------------------------------------------------

    def queue(
        self,
        to_user: str,
        msg_type: int,
        content: str = "",
        media_path: str = "",
        voice_length: int = 0,
        client_msg_id: str | None = None,
    ) -> OutboxRow:
        cid = client_msg_id or new_client_msg_id()
        now = time.time()
        with self._tx() as db:
            db.execute(
                "INSERT INTO outbox (client_msg_id, to_user, msg_type, content, media_path,"
                " voice_length, state, queued_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?, 'sending', ?, ?)",
                (cid, to_user, msg_type, content, media_path, voice_length, now, now),
            )
        row = self.outbox_row(cid)
        assert row is not None
        return row

    def outbox_row(self, client_msg_id: str) -> OutboxRow | None:
        row = self._db.execute(
            "SELECT client_msg_id, to_user, msg_type, content, media_path, voice_length, state,"
            " attempts, msg_id, create_time, queued_at, error, error_code FROM outbox"
            " WHERE client_msg_id = ?",
            (client_msg_id,),
        ).fetchone()
        return OutboxRow(*row) if row else None

    def outbox(self, states: Iterable[str] = ("sending", "failed")) -> list[OutboxRow]:
        st = tuple(states)
        marks = ",".join("?" * len(st))
        rows = self._db.execute(
            "SELECT client_msg_id, to_user, msg_type, content, media_path, voice_length, state,"
            " attempts, msg_id, create_time, queued_at, error, error_code FROM outbox"
            f" WHERE state IN ({marks}) ORDER BY queued_at, client_msg_id",
            st,
        ).fetchall()
        return [OutboxRow(*r) for r in rows]

    def note_attempt(self, client_msg_id: str) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE outbox SET attempts = attempts + 1, updated_at = ? WHERE client_msg_id = ?",
                (time.time(), client_msg_id),
            )

    def mark_sent(
        self, client_msg_id: str, msg_id: int, create_time: int, me: str = ""
    ) -> AppliedItem | None:
        """The server acknowledged the message. With ``me`` (the account's user name), a
        message sent with ``newsendmsg`` (not a media upload) also goes into the
        profile's messages at once, as the account's own copy: the server writes it to
        the account's log only for the account's other devices (S17). Returns that copy
        when it was new to the profile (a copy that came by sync first is not)."""
        with self._tx() as db:
            db.execute(
                "UPDATE outbox SET state = 'sent', msg_id = ?, create_time = ?, error = '',"
                " updated_at = ? WHERE client_msg_id = ?",
                (msg_id, create_time, time.time(), client_msg_id),
            )
            row = self.outbox_row(client_msg_id) if me else None
            if row is None or row.msg_type in UPLOADED_TYPES:
                return None
            item = own_copy(me, row)
            if not apply_item(db, me, item):
                return None
        return AppliedItem(item.cmd_id, KEY_MSG, 0, item)

    def mark_failed(self, client_msg_id: str, error: str, code: int | None = None) -> None:
        """``code``: the server's MM result if it refused the message (None: no answer)."""
        with self._tx() as db:
            db.execute(
                "UPDATE outbox SET state = 'failed', error = ?, error_code = ?, updated_at = ?"
                " WHERE client_msg_id = ? AND state != 'sent'",
                (error, code, time.time(), client_msg_id),
            )

    def mark_sending(self, client_msg_id: str) -> OutboxRow | None:
        """For ``resend``: a failed (or stuck) message goes back to ``sending`` with its
        ClientMsgId unchanged. Returns None if there is no such message."""
        with self._tx() as db:
            db.execute(
                "UPDATE outbox SET state = 'sending', attempts = 0, error = '', error_code = NULL,"
                " updated_at = ?"
                " WHERE client_msg_id = ? AND state != 'sent'",
                (time.time(), client_msg_id),
            )
        return self.outbox_row(client_msg_id)

    def drop_failed(self, client_msg_id: str) -> bool:
        """``wxnet outbox drop``: forget a failed message, which is then never sent.
        Returns False (nothing changed) unless the message is in the outbox as failed: one
        still sending may be in another process's hands, and a sent one is history."""
        with self._tx() as db:
            cur = db.execute(
                "DELETE FROM outbox WHERE client_msg_id = ? AND state = 'failed'",
                (client_msg_id,),
            )
        return cur.rowcount == 1

    def discard(self, client_msg_id: str) -> None:
        """Forget a message that will never be sent (a cancelled voice message)."""
        with self._tx() as db:
            db.execute("DELETE FROM outbox WHERE client_msg_id = ?", (client_msg_id,))

    # ---- inbox -----------------------------------------------------------------------

    def apply_batch(
        self, me: str, items: Iterable[pb.CmdItem], new_key: bytes | None
    ) -> list[AppliedItem]:
        """Apply a sync batch and store ``new_key`` in one transaction; returns the items
        that were new (an item seen before, by (key, seq), is skipped: S19)."""
        fresh: list[AppliedItem] = []
        with self._tx() as db:
            for item in items:
                if item.seq:
                    cur = db.execute(
                        "INSERT OR IGNORE INTO applied (key, seq) VALUES (?, ?)",
                        (item.key, item.seq),
                    )
                    if cur.rowcount == 0:
                        continue
                if self._apply(db, me, item):
                    fresh.append(AppliedItem(item.cmd_id, item.key, item.seq, item))
            if new_key is not None:
                db.execute(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES ('synckey', ?)",
                    (new_key.hex(),),
                )
        return fresh

    def _apply(self, db: sqlite3.Connection, me: str, item: pb.CmdItem) -> bool:
        return apply_item(db, me, item)

    def save_contact(self, c: pb.Contact) -> None:
        item = pb.CmdItem(cmd_id=CMD_MOD_CONTACT, contact=c)
        with self._tx() as db:
            self._apply(db, "", item)

    # ---- reads -----------------------------------------------------------------------

    def contacts(self) -> list[ContactRow]:
        rows = self._db.execute(
            "SELECT user_name, nick_name, is_chatroom, members, owner FROM contacts"
            " ORDER BY is_chatroom, user_name"
        ).fetchall()
        return [ContactRow(r[0], r[1], bool(r[2]), tuple(json.loads(r[3])), r[4]) for r in rows]

    def friend_requests(self) -> list[MessageRow]:
        """Friend requests (VERIFYMSG, msg_type 37) from accounts that are not contacts
        yet, the latest per requester, oldest first."""
        rows = self._db.execute(
            f"SELECT {MESSAGE_COLUMNS} FROM messages m WHERE msg_type = {MsgType.VERIFY:d}"
            " AND from_user NOT IN (SELECT user_name FROM contacts)"
            " AND msg_id = (SELECT MAX(msg_id) FROM messages"
            f"  WHERE msg_type = {MsgType.VERIFY:d} AND from_user = m.from_user)"
            " ORDER BY create_time, msg_id"
        ).fetchall()
        return [message_row(r) for r in rows]

    def history(self, talker: str, limit: int = 100) -> list[MessageRow]:
        rows = self._db.execute(
            f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE talker = ?"
            " ORDER BY create_time DESC, msg_id DESC LIMIT ?",
            (talker, limit),
        ).fetchall()
        return [message_row(r) for r in reversed(rows)]

    def message(self, msg_id: int) -> MessageRow | None:
        r = self._db.execute(
            f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE msg_id = ?", (msg_id,)
        ).fetchone()
        return message_row(r) if r else None

    def thumb(self, msg_id: int) -> bytes | None:
        r = self._db.execute("SELECT thumb FROM messages WHERE msg_id = ?", (msg_id,)).fetchone()
        return bytes(r[0]) if r and r[0] is not None else None

    def conversations(self) -> list[tuple[str, int, int]]:
        """(talker, unread count, last create_time), most recent first."""
        rows = self._db.execute(
            "SELECT talker, SUM(unread), MAX(create_time) FROM messages GROUP BY talker"
            " ORDER BY MAX(create_time) DESC, talker"
        ).fetchall()
        return [(str(r[0]), int(r[1] or 0), int(r[2] or 0)) for r in rows]

    def mark_read_local(self, talker: str) -> int:
        """Mark a conversation read; returns the newest msg_id in it (0 if none)."""
        with self._tx() as db:
            db.execute("UPDATE messages SET unread = 0 WHERE talker = ?", (talker,))
            r = db.execute("SELECT MAX(msg_id) FROM messages WHERE talker = ?", (talker,))
            row = r.fetchone()
        return int(row[0] or 0)

    def message_count(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM messages").fetchone()[0])
