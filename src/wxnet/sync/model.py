"""The engine's domain values: its constants, :class:`EngineConfig`, :class:`SyncResult`,
the account field checks, and the sync items it builds (split out of ``engine.py``).
"""

from __future__ import annotations

import logging
import re
import sqlite3
from dataclasses import dataclass

from wxnet.proto import wxnet_pb2 as pb
from wxnet.proto.enums import CmdId, MsgType
from wxnet.proto.errors import MMError, MMRet
from wxnet.proto.synckey import (
    KEY_CHATROOM,
    KEY_CONTACT,
    KEY_MSG,
    KEY_PROFILE,
    SyncKey,
)
from wxnet.sync.items import stored
from wxnet.sync.passwords import hash_password
from wxnet.sync.sqlite_store import insert_account
from wxnet.sync.store import (
    Item,
    RoomRow,
    SessionRow,
)

SERVED_KEYS = (KEY_PROFILE, KEY_MSG, KEY_CONTACT, KEY_CHATROOM)
# Wire numbers are wxnet.proto.enums' (CmdId, MsgType); these are the engine's names.
MSG_TEXT, MSG_IMAGE, MSG_VOICE = MsgType.TEXT, MsgType.IMAGE, MsgType.VOICE
MEDIA_TYPES = frozenset({MsgType.IMAGE, MsgType.VOICE, MsgType.VIDEO, MsgType.MICRO_VIDEO})
OP_REQUEST, OP_ACCEPT = 2, 3
_REQUEST_ID = "verify:"  # client_msg_id of a request: one per (requester, recipient)
STATUS_SENT, STATUS_READ = 2, 4
ROOM_SUFFIX = "@chatroom"
_NAME_RE = re.compile(r"[a-z][a-z0-9_.-]{2,31}")
#: Longest password accepted (argon2 hashes any length; a megabyte costs CPU for nothing).
MAX_PASSWORD_CHARS = 1024
MAX_DEVICE_CHARS = 64

log = logging.getLogger("wxnet.engine")

#: A session as the engine hands it to request handlers.
Session = SessionRow


@dataclass(frozen=True, slots=True)
class EngineConfig:
    session_ttl: int = 30 * 24 * 3600
    sync_window_items: int = 100
    sync_window_bytes: int = 64 * 1024
    init_recent_messages: int = 50
    max_send_batch: int = 10
    max_content_bytes: int = 16 * 1024
    max_room_members: int = 500
    revoke_window: int = 120
    max_image_bytes: int = 10 * 1024 * 1024
    max_voice_bytes: int = 2 * 1024 * 1024
    max_file_bytes: int = 20 * 1024 * 1024
    max_video_bytes: int = 20 * 1024 * 1024
    max_thumb_bytes: int = 64 * 1024  # a video's thumbnail, as sent
    max_chunk_bytes: int = 64 * 1024
    login_failures_per_account_address: int = 5
    uploads_per_account: int = 16  # unfinished image, voice, file and video uploads
    upload_bytes_per_account: int = 64 * 1024 * 1024  # their declared sizes, together
    upload_ttl: float = 86400.0  # an unfinished upload is deleted after this (seconds)
    min_free_disk_bytes: int = 256 * 1024 * 1024  # new upload bytes stop below this
    login_failures_per_address: int = 20
    login_failure_window: float = 60.0
    login_backoff_base: float = 1.0
    login_backoff_max: float = 900.0
    login_workers: int = 1
    login_queue: int = 16
    max_sessions_per_account: int = 20
    contacts: str = "request"
    integrity_check: str = "quick"
    durability: str = "FULL"
    #: The in-memory log tail (SQLiteStore's LogTail): entries per log, bytes per log,
    #: bytes in all; tail_items = 0 turns it off.
    tail_items: int = 32
    tail_bytes: int = 16 * 1024
    tail_total_bytes: int = 32 << 20
    #: SQLite's page cache per connection, KiB (SQLite's own default is 2 MiB; half of
    #: it cost no CPU on the benches and saves ~100 bytes per idle link at 10,000:
    #: docs/benchmarks.md, "Idle links")
    page_cache_kib: int = 1024
    #: seconds between the SQLite store's WAL checkpoints, run off the writer thread
    #: (0: SQLite checkpoints inside the writer's commits, every 4,000 pages)
    checkpoint_interval: float = 0.25
    #: entries the in-memory group cache keeps; the oldest go first, misses read the store
    cache_entries: int = 100_000
    #: accounts whose state stays in memory while they are in use (the SQLite store's
    #: log heads and device lists, the engine's sessions, names, contact lists and
    #: committed keys; sync/cache.py ActiveCache): an account not used while this many
    #: others were has its entries dropped, read back from the store when next used
    active_accounts: int = 1024


@dataclass(frozen=True, slots=True)
class SyncResult:
    items: list[Item]
    key: SyncKey
    continue_flag: int


# ---------------------------------------------------------------------- accounts
def validate_user_name(name: str) -> None:
    if not _NAME_RE.fullmatch(name):
        raise MMError(
            MMRet.ERR_ARG,
            "user names are 3-32 characters: a lowercase letter, then letters, digits, . _ -",
        )


def check_new_user(name: str, password: str, nick: str | None) -> str:
    """Validate a new account's fields; returns the nick name to store.

    Raises:
        MMError: ERR_ARG, saying which field is wrong.
    """
    validate_user_name(name)
    if len(password) < 6:
        raise MMError(MMRet.ERR_ARG, "passwords must have at least 6 characters")
    nick = nick or name
    if len(nick) > 64:
        raise MMError(MMRet.ERR_ARG, "nick names have at most 64 characters")
    return nick


def profile_item(uin: int, name: str, nick: str) -> bytes:
    user = pb.UserInfo(uin=uin, user_name=name, nick_name=nick)
    return stored(pb.CmdItem(cmd_id=CmdId.MOD_USER_INFO, user_info=user))


def add_user_sync(
    conn: sqlite3.Connection, name: str, password: str, nick: str | None, now: float
) -> int:
    """Create an account on an open SQLite connection (``wxnet user add``, which may
    run while the server does). Returns the new uin.

    Raises:
        MMError: ERR_ARG for a bad name or password, or a name that is taken.
    """
    nick = check_new_user(name, password, nick)
    pw_hash = hash_password(password)
    conn.execute("BEGIN IMMEDIATE")
    try:
        uin = insert_account(conn, name, pw_hash, nick, int(now), b"")
        conn.execute(
            "UPDATE items SET body=? WHERE id=(SELECT item FROM sync_log"
            " WHERE uin=? AND key=1 AND seq=1)",
            (profile_item(uin, name, nick), uin),
        )
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return uin


def _item(**body: object) -> bytes:
    return stored(pb.CmdItem(**body))  # type: ignore[arg-type]


def _contact_item(c: pb.Contact) -> bytes:
    return _item(cmd_id=CmdId.MOD_CONTACT, contact=c)


def _room_pb(room: RoomRow) -> pb.Contact:
    return pb.Contact(
        user_name=room.name,
        nick_name=room.topic,
        is_chatroom=True,
        members=room.members,
        owner=room.owner,
        contact_type=2,
    )
