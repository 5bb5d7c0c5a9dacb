"""The SQLite schema of the embedded store (one file, WAL), and its version.

The ``meta`` row ``schema_version`` says which schema a store holds. At open
(:func:`init_schema`, run by ``wxnet serve``, ``wxnet store init`` and ``wxnet user``):

* an empty file gets the current schema (``_DDL``) and ``SCHEMA_VERSION``;
* a store at an older version is brought forward by ``MIGRATIONS[v + 1]``, ...,
  ``MIGRATIONS[SCHEMA_VERSION]``, each step and its version bump in one transaction
  (a crash leaves the store at the last finished step, never half-way);
* a store from a newer wxnet is refused (:class:`StoreTooNew`): this build does not
  know what the newer schema means, and writing to it could lose data.

A schema change therefore edits ``_DDL`` (new stores), adds ``MIGRATIONS[n]`` (the same
change for existing ones) and sets ``SCHEMA_VERSION = n``. Another store (PostgreSQL)
keeps the same numbers and the same three rules.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

__all__ = [
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "SchemaError",
    "StoreTooNew",
    "init_schema",
    "read_schema_version",
]

SCHEMA_VERSION = 2

#: MIGRATIONS[n]: the statements that turn a schema n-1 store into schema n.
MIGRATIONS: dict[int, tuple[str, ...]] = {}

#: Schema 2: QR logins and web uploads' metadata, shared by every worker and node
#: (``sync/shared.py``).
_SHARED_DDL = """
CREATE TABLE IF NOT EXISTS qr_logins (
    key TEXT PRIMARY KEY,
    created REAL NOT NULL,
    expires REAL NOT NULL,
    state TEXT NOT NULL,
    uin INTEGER NOT NULL,
    ticket TEXT NOT NULL,
    version INTEGER NOT NULL,
    user_agent TEXT NOT NULL,
    address TEXT NOT NULL,
    holder TEXT NOT NULL,
    push_uuid TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS qr_logins_holder ON qr_logins(holder, created);
CREATE INDEX IF NOT EXISTS qr_logins_uin ON qr_logins(uin);
CREATE TABLE IF NOT EXISTS web_uploads (
    media_id TEXT PRIMARY KEY,
    sid_key TEXT NOT NULL,
    uin INTEGER NOT NULL,
    ident TEXT NOT NULL,
    total INTEGER NOT NULL,
    chunks INTEGER NOT NULL,
    sizes TEXT NOT NULL,
    spooled INTEGER NOT NULL,
    created REAL NOT NULL,
    done INTEGER NOT NULL,
    sent INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS web_uploads_uin ON web_uploads(uin, created);
CREATE INDEX IF NOT EXISTS web_uploads_sid ON web_uploads(sid_key, ident);
"""

MIGRATIONS[2] = tuple(s.strip() for s in _SHARED_DDL.split(";") if s.strip())

_DDL = """
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS accounts (
    uin INTEGER PRIMARY KEY AUTOINCREMENT,
    user_name TEXT NOT NULL UNIQUE,
    nick_name TEXT NOT NULL,
    pw_hash TEXT NOT NULL,
    created INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS sessions (
    sid TEXT PRIMARY KEY,
    uin INTEGER NOT NULL REFERENCES accounts(uin),
    device_id TEXT NOT NULL,
    device_name TEXT NOT NULL,
    kind TEXT NOT NULL,
    created INTEGER NOT NULL,
    expires INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS sessions_uin ON sessions(uin);
CREATE TABLE IF NOT EXISTS devices (
    uin INTEGER NOT NULL,
    device_id TEXT NOT NULL,
    committed_key BLOB NOT NULL,
    updated INTEGER NOT NULL,
    PRIMARY KEY (uin, device_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS contacts (
    owner INTEGER NOT NULL,
    peer TEXT NOT NULL,
    created INTEGER NOT NULL,
    PRIMARY KEY (owner, peer)
) WITHOUT ROWID;
-- The account's own remark name and pin of a contact or group (webwxoplog).
CREATE TABLE IF NOT EXISTS contact_marks (
    owner INTEGER NOT NULL,
    peer TEXT NOT NULL,
    remark TEXT NOT NULL,
    pinned INTEGER NOT NULL,
    updated INTEGER NOT NULL,
    PRIMARY KEY (owner, peer)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS chatrooms (
    name TEXT PRIMARY KEY,
    topic TEXT NOT NULL,
    owner TEXT NOT NULL,
    created INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS room_members (
    room TEXT NOT NULL,
    member TEXT NOT NULL,
    PRIMARY KEY (room, member)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS room_members_member ON room_members(member);
CREATE TABLE IF NOT EXISTS messages (
    msg_id INTEGER PRIMARY KEY,
    sender INTEGER NOT NULL,
    client_msg_id TEXT NOT NULL,
    to_user TEXT NOT NULL,
    msg_type INTEGER NOT NULL,
    create_time INTEGER NOT NULL,
    revoked INTEGER NOT NULL DEFAULT 0,
    media TEXT,
    UNIQUE (sender, client_msg_id)
);
-- One row per stored CmdItem (without key and seq); the logs reference it, so a
-- message to a group of 500 is stored once and fanned out as 500 small rows.
CREATE TABLE IF NOT EXISTS items (
    id INTEGER PRIMARY KEY,
    body BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS sync_log (
    uin INTEGER NOT NULL,
    key INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    item INTEGER NOT NULL,
    PRIMARY KEY (uin, key, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS web_sessions (
    key TEXT PRIMARY KEY,
    uin INTEGER NOT NULL,
    user_name TEXT NOT NULL,
    nick_name TEXT NOT NULL,
    session_key TEXT NOT NULL,
    skey TEXT NOT NULL,
    pass_ticket TEXT NOT NULL,
    data_ticket TEXT NOT NULL,
    expires REAL NOT NULL,
    alive INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS uploads (
    owner INTEGER NOT NULL,
    client_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    to_user TEXT NOT NULL,
    total_len INTEGER NOT NULL,
    ranges TEXT NOT NULL,
    voice_length INTEGER NOT NULL DEFAULT 0,
    voice_format INTEGER NOT NULL DEFAULT 0,
    created INTEGER NOT NULL,
    PRIMARY KEY (owner, client_id, kind)
) WITHOUT ROWID;
"""
_DDL += _SHARED_DDL


class SchemaError(RuntimeError):
    """The file is not a store this wxnet can open; the message says why and what to do."""


class StoreTooNew(SchemaError):
    """The store was written by a newer wxnet (its schema version is above ours)."""


def _stored_version(conn: sqlite3.Connection) -> int | None:
    """The store's schema version; None for an empty file."""
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if "meta" not in tables:
        if tables:
            raise SchemaError("the file holds tables but no schema version: not a wxnet store")
        return None
    row = conn.execute("SELECT v FROM meta WHERE k='schema_version'").fetchone()
    if row is None or not str(row[0]).isdigit():
        raise SchemaError("the store has no valid schema version: not a wxnet store")
    return int(row[0])


def _check_not_newer(version: int) -> None:
    if version > SCHEMA_VERSION:
        from wxnet import __version__

        raise StoreTooNew(
            f"the store has schema version {version}, written by a newer wxnet; this "
            f"wxnet {__version__} knows schema {SCHEMA_VERSION}: upgrade wxnet (the store "
            "is left as it is)"
        )


def init_schema(conn: sqlite3.Connection) -> int:
    """Create the schema in an empty file, or migrate an older store; return the version.

    Raises:
        StoreTooNew: the store's version is above :data:`SCHEMA_VERSION`.
        SchemaError: the file is some other SQLite database.
    """
    version = _stored_version(conn)
    if version is None:
        # BEGIN IMMEDIATE: two processes creating one store at once take turns, and the
        # second finds the schema (IF NOT EXISTS) and the version (OR IGNORE) in place.
        conn.executescript(
            "BEGIN IMMEDIATE;"
            + _DDL
            + f"INSERT OR IGNORE INTO meta VALUES ('schema_version', '{SCHEMA_VERSION}');"
            + "COMMIT;"
        )
        version = _stored_version(conn)
        assert version is not None
    _check_not_newer(version)
    while version < SCHEMA_VERSION:
        step = version + 1
        conn.execute("BEGIN IMMEDIATE")
        try:
            current = _stored_version(conn)  # another process may have migrated meanwhile
            if current is not None and current >= step:
                conn.execute("ROLLBACK")
                version = current
                continue
            for statement in MIGRATIONS[step]:
                conn.execute(statement)
            conn.execute("UPDATE meta SET v=? WHERE k='schema_version'", (str(step),))
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        version = step
    return version


def read_schema_version(path: Path) -> int | None:
    """The schema version of the store at ``path`` without changing it (None: no store).

    Raises:
        StoreTooNew, SchemaError: as :func:`init_schema` would.
    """
    if not path.exists():
        return None
    try:
        conn = sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise SchemaError(f"cannot open {path}: {exc}") from None
    try:
        version = _stored_version(conn)
    except sqlite3.DatabaseError as exc:
        raise SchemaError(f"{path} is not an SQLite database ({exc})") from None
    finally:
        conn.close()
    if version is not None:
        _check_not_newer(version)
    return version
