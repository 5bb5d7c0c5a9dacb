"""Stores for the contract tests: the same suite runs on SQLite and on PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from tests.engines import PostgresServer
from wxnet.sync.engine import profile_item
from wxnet.sync.pg_store import PostgresStore
from wxnet.sync.sqlite_store import SQLiteStore
from wxnet.sync.store import Changes, Store

OpenStore = Callable[[], Awaitable[Store]]


class Published:
    """What a store published, in order."""

    def __init__(self) -> None:
        self.changes: list[Changes] = []

    def __call__(self, ch: Changes) -> None:
        self.changes.append(ch)

    def head(self, uin: int, key: int) -> int:
        return max((c.heads.get((uin, key), 0) for c in self.changes), default=0)


@pytest.fixture(params=["sqlite", "postgres"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def published() -> Published:
    return Published()


@pytest.fixture
async def open_store(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest, published: Published
) -> AsyncIterator[OpenStore]:
    """Opens the store of this run's kind on one place (again: reopens it)."""
    opened: list[Store] = []
    dsn = ""
    if kind == "postgres":
        pg: PostgresServer = request.getfixturevalue("pg_server")
        dsn = pg.new_database()

    async def open_() -> Store:
        st: Store
        if kind == "sqlite":
            st = SQLiteStore(tmp_path / "wxnet.db", "NORMAL", profile_item=profile_item)
        else:
            st = PostgresStore(dsn, profile_item=profile_item)
        await st.start(published)
        opened.append(st)
        return st

    try:
        yield open_
    finally:
        for st in opened:
            await st.aclose()


@pytest.fixture
async def store(open_store: OpenStore) -> Store:
    return await open_store()
