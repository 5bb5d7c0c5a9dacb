"""The SQLite schema of the embedded store (one file, WAL)."""

from __future__ import annotations

import sqlite3

__all__ = ["SCHEMA_VERSION", "init_schema"]

SCHEMA_VERSION = 1

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


def init_schema(conn: sqlite3.Connection) -> None:
    conn.executescript(_DDL)
    row = conn.execute("SELECT v FROM meta WHERE k='schema_version'").fetchone()
    if row is None:
        conn.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
    elif int(row[0]) > SCHEMA_VERSION:
        raise RuntimeError(
            f"the store was written by a newer wxnet (schema {row[0]} > {SCHEMA_VERSION})"
        )
