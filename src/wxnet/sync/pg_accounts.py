"""Accounts, sessions and web sessions of the shared store
(:class:`wxnet.sync.pg_store.PostgresStore`).

A session is created by ``wx_add_session`` (``sync/pg_schema.py``), under its account's
lock taken exclusively: the lock under which ``wx_commit`` asks S17's question (another
device with a live session?), so a login and a send of one account are ordered in every
process. Ending a session (logout, eviction) needs no lock: a send that still counts the
device only writes an entry nobody reads.
"""

from __future__ import annotations

import asyncpg

from wxnet.proto.errors import MMError, MMRet
from wxnet.sync.pg_base import PostgresBase
from wxnet.sync.store import Account, SessionRow, WebSessionRow, session_key_hash

__all__ = ["PostgresAccounts"]

_KEYS = (1, 2, 3, 11)


class PostgresAccounts(PostgresBase):
    """A base of :class:`~wxnet.sync.pg_store.PostgresStore`."""

    async def create_account(self, name: str, pw_hash: str, nick: str, now: int) -> int:
        async with self._conn() as c, c.transaction():
            try:
                uin = int(
                    await c.fetchval(
                        "INSERT INTO accounts (user_name, nick_name, pw_hash, created)"
                        " VALUES ($1,$2,$3,$4) RETURNING uin",
                        name,
                        nick,
                        pw_hash,
                        now,
                    )
                )
            except asyncpg.UniqueViolationError:
                raise MMError(MMRet.ERR_ARG, f"user {name!r} already exists") from None
            item = await c.fetchval(
                "INSERT INTO items (body) VALUES ($1) RETURNING id",
                self._profile_item(uin, name, nick),
            )
            await c.execute("INSERT INTO sync_log VALUES ($1, 1, 1, $2)", uin, item)
            await c.executemany(
                "INSERT INTO heads VALUES ($1,$2,$3)",
                [(uin, k, 1 if k == 1 else 0) for k in _KEYS],
            )
        return uin

    async def account_by_name(self, name: str) -> Account | None:
        r = await self._row(
            "SELECT uin, user_name, nick_name, pw_hash FROM accounts WHERE user_name=$1", name
        )
        return None if r is None else Account(int(r[0]), r[1], r[2], r[3])

    async def account_by_uin(self, uin: int) -> Account | None:
        r = await self._row(
            "SELECT uin, user_name, nick_name, pw_hash FROM accounts WHERE uin=$1", uin
        )
        return None if r is None else Account(int(r[0]), r[1], r[2], r[3])

    async def create_session(self, row: SessionRow, now: int) -> None:
        await self._execute(
            "SELECT wx_add_session($1,$2,$3,$4,$5,$6,$7)",
            session_key_hash(row.sid),
            row.uin,
            row.device_id,
            row.device_name,
            row.kind,
            now,
            row.expires,
        )

    async def has_other_device(self, uin: int, device_id: str, now: int) -> bool:
        r = await self._row(
            "SELECT 1 FROM sessions WHERE uin=$1 AND device_id<>$2 AND expires>=$3 LIMIT 1",
            uin,
            device_id,
            now,
        )
        return r is not None

    async def session(self, sid: str) -> SessionRow | None:
        r = await self._row(
            "SELECT s.uin, a.user_name, s.device_id, s.device_name, s.kind, s.expires"
            " FROM sessions s JOIN accounts a ON a.uin=s.uin WHERE s.sid=$1",
            session_key_hash(sid),
        )
        return None if r is None else SessionRow(sid, int(r[0]), r[1], r[2], r[3], r[4], r[5])

    async def delete_session(self, sid: str) -> None:
        await self._execute("DELETE FROM sessions WHERE sid=$1", session_key_hash(sid))

    async def evict_sessions(self, uin: int, keep: int) -> list[str]:
        # ctid breaks ties of one second, as rowid does in SQLite; FOR UPDATE keeps two
        # processes evicting for one account from both counting the same rows.
        async with self._conn() as c, c.transaction():
            rows = await c.fetch(
                "SELECT sid FROM sessions WHERE uin=$1 ORDER BY created, ctid FOR UPDATE", uin
            )
            gone = [str(r[0]) for r in rows[: max(0, len(rows) - keep)]]
            if gone:
                await c.execute("DELETE FROM sessions WHERE sid = ANY($1::text[])", gone)
        return gone

    # ---------------------------------------------------------------- web sessions
    async def save_web_session(self, row: WebSessionRow) -> None:
        await self._execute(
            "INSERT INTO web_sessions VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10)"
            " ON CONFLICT (key) DO UPDATE SET expires=excluded.expires, alive=excluded.alive,"
            " nick_name=excluded.nick_name",
            *row.values(),
        )

    async def web_session(self, key: str) -> WebSessionRow | None:
        r = await self._row("SELECT * FROM web_sessions WHERE key=$1", key)
        return None if r is None else WebSessionRow.from_row(r)

    async def drop_web_sessions(self, before: float) -> int:
        async with self._conn() as c:
            status = await c.execute("DELETE FROM web_sessions WHERE expires<$1", before)
        return int(status.split()[-1])
