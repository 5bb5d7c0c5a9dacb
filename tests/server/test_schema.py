"""The store's schema version: new stores get the current one, older ones are migrated
at open (step by step, each step atomic), newer ones are refused and left untouched."""

from __future__ import annotations

import io
import sqlite3
from pathlib import Path

import pytest

from wxnet.cli.common import IO
from wxnet.cli.main import run
from wxnet.sync import schema
from wxnet.sync.db import connect
from wxnet.sync.schema import SchemaError, StoreTooNew, init_schema, read_schema_version


def version_of(path: Path) -> str:
    with sqlite3.connect(path) as conn:
        return str(conn.execute("SELECT v FROM meta WHERE k='schema_version'").fetchone()[0])


def set_version(path: Path, v: int) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE meta SET v=? WHERE k='schema_version'", (str(v),))


def test_a_new_store_gets_the_current_version(tmp_path: Path) -> None:
    path = tmp_path / "wxnet.db"
    assert read_schema_version(path) is None
    conn = connect(path)
    assert init_schema(conn) == schema.SCHEMA_VERSION
    assert init_schema(conn) == schema.SCHEMA_VERSION  # opening again changes nothing
    conn.close()
    assert version_of(path) == str(schema.SCHEMA_VERSION)
    assert read_schema_version(path) == schema.SCHEMA_VERSION


def test_an_older_store_is_migrated_step_by_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "wxnet.db"
    conn = connect(path)
    init_schema(conn)
    conn.execute("INSERT INTO accounts VALUES (1, 'alice', 'Alice', 'x', 0)")
    conn.close()
    now = schema.SCHEMA_VERSION
    # This build pretends to be two versions ahead, with two migration steps.
    monkeypatch.setattr(schema, "SCHEMA_VERSION", now + 2)
    monkeypatch.setattr(
        schema,
        "MIGRATIONS",
        {
            now + 1: ("ALTER TABLE accounts ADD COLUMN note TEXT NOT NULL DEFAULT ''",),
            now + 2: ("UPDATE accounts SET note = 'migrated'",),
        },
    )
    conn = connect(path)
    assert init_schema(conn) == now + 2
    assert conn.execute("SELECT user_name, note FROM accounts").fetchall() == [
        ("alice", "migrated")
    ]
    conn.close()
    assert version_of(path) == str(now + 2)


def test_a_failing_step_leaves_the_store_at_the_last_finished_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "wxnet.db"
    conn = connect(path)
    init_schema(conn)
    conn.close()
    now = schema.SCHEMA_VERSION
    monkeypatch.setattr(schema, "SCHEMA_VERSION", now + 2)
    monkeypatch.setattr(
        schema,
        "MIGRATIONS",
        {
            now + 1: ("CREATE TABLE extra (x INTEGER)",),
            now + 2: ("CREATE TABLE more (y INTEGER)", "THIS IS NOT SQL"),
        },
    )
    conn = connect(path)
    with pytest.raises(sqlite3.OperationalError):
        init_schema(conn)
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
    conn.close()
    assert "extra" in tables and "more" not in tables  # step 2 rolled back whole
    assert version_of(path) == str(now + 1)


def test_a_store_from_a_newer_wxnet_is_refused_everywhere(tmp_path: Path) -> None:
    data = tmp_path / "var"
    out, err = io.StringIO(), io.StringIO()
    assert run(["store", "init", "--data", str(data)], IO(out, err)) == 0
    path = data / "wxnet.db"
    set_version(path, schema.SCHEMA_VERSION + 1)
    before = path.read_bytes()
    with pytest.raises(StoreTooNew, match="newer wxnet"):
        read_schema_version(path)
    conn = connect(path)
    with pytest.raises(StoreTooNew, match=r"upgrade wxnet"):
        init_schema(conn)
    conn.close()
    for argv in (
        ["store", "init"],
        ["store", "version"],
        ["user", "add", "alice", "--password", "secret1"],
        ["serve", "--check-config", "--long-port", "0", "--http-port", "0"],
        ["serve", "--long-port", "0", "--http-port", "0"],
    ):
        err = io.StringIO()
        assert run([*argv, "--data", str(data)], IO(io.StringIO(), err)) in (1, 2), argv
        assert f"schema version {schema.SCHEMA_VERSION + 1}" in err.getvalue(), argv
    assert version_of(path) == str(schema.SCHEMA_VERSION + 1)
    assert path.read_bytes()[:100] == before[:100]  # the header: nothing written


def test_a_foreign_database_is_not_a_store(tmp_path: Path) -> None:
    path = tmp_path / "wxnet.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE photos (x)")
    with pytest.raises(SchemaError, match="not a wxnet store"):
        read_schema_version(path)
    (tmp_path / "junk.db").write_bytes(b"not sqlite at all" * 100)
    with pytest.raises(SchemaError, match="not an SQLite database"):
        read_schema_version(tmp_path / "junk.db")


def test_a_schema_1_store_gets_the_shared_tables(tmp_path: Path) -> None:
    """Schema 2 added the tables every worker shares (QR logins, web uploads): a store
    written before them is migrated in place and keeps its rows."""
    path = tmp_path / "wxnet.db"
    conn = connect(path)
    init_schema(conn)
    conn.executescript(
        "DROP TABLE qr_logins; DROP TABLE web_uploads;"
        "INSERT INTO accounts (user_name, nick_name, pw_hash, created) VALUES ('a','A','h',1);"
    )
    conn.execute("UPDATE meta SET v='1' WHERE k='schema_version'")
    conn.commit()
    assert init_schema(conn) == 2
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"qr_logins", "web_uploads"} <= tables
    assert conn.execute("SELECT count(*) FROM accounts").fetchone()[0] == 1
    conn.close()
