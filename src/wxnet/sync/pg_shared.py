"""The shared store's part of the shared state (:class:`wxnet.sync.shared.SharedState`):
QR logins, web uploads' metadata and the account list, in PostgreSQL, for every worker
and node at once.

A QR login's create takes a transaction-scoped advisory lock, so that the fair caps
(per holder, in all) are counted by one process at a time; every other change is one
statement on one row (a compare-and-set on the login's version, an atomic merge of an
upload's chunk sizes), so processes never overwrite each other.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from wxnet.sync.pg_base import PostgresBase
from wxnet.sync.shared import AccountListing, QrLoginRow, WebUploadRow

__all__ = ["PostgresShared"]

_QR_LOCK = 0x77786E7172  # advisory lock id while a QR login is created
_QR_COLS = (
    "key, created, expires, state, uin, ticket, version, user_agent, address, holder, push_uuid"
)
_UP_COLS = "media_id, sid_key, uin, ident, total, chunks, sizes::text, spooled, created, done, sent"


class PostgresShared(PostgresBase):
    """A base of :class:`~wxnet.sync.pg_store.PostgresStore`."""

    async def _rows(self, sql: str, *args: Any) -> list[Any]:
        async with self._conn() as c:
            return list(await c.fetch(sql, *args))

    # ---------------------------------------------------------------- QR logins
    async def qr_login_create(
        self, row: QrLoginRow, per_holder: int, max_pending: int, max_rows: int
    ) -> tuple[bool, list[str]]:
        async with self._conn() as c, c.transaction():
            await c.execute("SELECT pg_advisory_xact_lock($1)", _QR_LOCK)
            await c.execute("DELETE FROM qr_logins WHERE expires<=$1", row.created)
            held = await c.fetch(
                "SELECT key FROM qr_logins WHERE holder=$1 AND state='waiting'"
                " ORDER BY created, key",
                row.holder,
            )
            gone = [str(r[0]) for r in held[: max(0, len(held) - per_holder + 1)]]
            if gone:
                await c.execute("DELETE FROM qr_logins WHERE key = ANY($1::text[])", gone)
            while True:
                waiting = int(
                    await c.fetchval("SELECT count(*) FROM qr_logins WHERE state='waiting'")
                )
                if waiting < max_pending or not waiting:
                    break
                key = await c.fetchval(
                    "DELETE FROM qr_logins WHERE key=(SELECT key FROM qr_logins"
                    " WHERE state='waiting' AND holder=(SELECT holder FROM qr_logins"
                    " WHERE state='waiting' GROUP BY holder ORDER BY count(*) DESC,"
                    " min(created) LIMIT 1) ORDER BY created, key LIMIT 1) RETURNING key"
                )
                gone.append(str(key))
            if int(await c.fetchval("SELECT count(*) FROM qr_logins")) >= max_rows:
                return False, gone
            await c.execute(
                f"INSERT INTO qr_logins ({_QR_COLS}) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11)",
                *row.values(),
            )
            return True, gone

    async def qr_login(self, key: str) -> QrLoginRow | None:
        rows = await self._rows(f"SELECT {_QR_COLS} FROM qr_logins WHERE key=$1", key)
        return QrLoginRow.from_row(rows[0]) if rows else None

    async def qr_login_update(self, row: QrLoginRow, version: int) -> bool:
        rows = await self._rows(
            "UPDATE qr_logins SET state=$1, uin=$2, ticket=$3, version=$4, expires=$5"
            " WHERE key=$6 AND version=$7 RETURNING key",
            row.state, row.uin, row.ticket, row.version, row.expires, row.key, version,
        )  # fmt: skip
        return bool(rows)

    async def qr_login_redeem(self, key: str, ticket: str, now: float) -> int | None:
        rows = await self._rows(
            "UPDATE qr_logins SET state='used', version=version+1 WHERE key=$1 AND"
            " ticket=$2 AND ticket<>'' AND state='confirmed' AND expires>$3 RETURNING uin",
            key, ticket, now,
        )  # fmt: skip
        return int(rows[0][0]) if rows else None

    async def qr_login_push(self, uin: int, now: float) -> str:
        rows = await self._rows(
            "SELECT push_uuid FROM qr_logins WHERE uin=$1 AND push_uuid<>'' AND"
            " state IN ('waiting', 'scanned') AND expires>$2 ORDER BY created DESC LIMIT 1",
            uin, now,
        )  # fmt: skip
        return str(rows[0][0]) if rows else ""

    async def drop_qr_logins(self, now: float) -> int:
        async with self._conn() as c:
            await c.execute("DELETE FROM qr_logins WHERE expires<=$1", now)
            return int(await c.fetchval("SELECT count(*) FROM qr_logins"))

    # ---------------------------------------------------------------- web uploads
    async def _uploads(self, where: str, *args: Any) -> list[WebUploadRow]:
        rows = await self._rows(f"SELECT {_UP_COLS} FROM web_uploads WHERE {where}", *args)
        return [WebUploadRow.from_row(r) for r in rows]

    async def web_upload(self, media_id: str) -> WebUploadRow | None:
        got = await self._uploads("media_id=$1", media_id)
        return got[0] if got else None

    async def web_upload_by_ident(self, sid_key: str, ident: str) -> WebUploadRow | None:
        got = await self._uploads(
            "sid_key=$1 AND ident=$2 ORDER BY created DESC LIMIT 1", sid_key, ident
        )
        return got[0] if got else None

    async def web_uploads_of(self, uin: int) -> list[WebUploadRow]:
        return await self._uploads("uin=$1 ORDER BY created, media_id", uin)

    async def web_upload_put(self, row: WebUploadRow) -> None:
        v = row.values()
        async with self._conn() as c:
            await c.execute(
                "INSERT INTO web_uploads (media_id, sid_key, uin, ident, total, chunks, sizes,"
                " spooled, created, done, sent)"
                " VALUES ($1,$2,$3,$4,$5,$6,$7::jsonb,$8,$9,$10,$11)"
                " ON CONFLICT (media_id) DO UPDATE SET sizes=excluded.sizes,"
                " spooled=excluded.spooled, done=excluded.done, sent=excluded.sent",
                *v,
            )

    async def web_upload_chunk(self, media_id: str, index: int, size: int) -> WebUploadRow | None:
        got = await self._uploads_returning(
            "UPDATE web_uploads SET sizes = sizes || jsonb_build_object($2::text, $3::bigint),"
            " spooled = (SELECT coalesce(sum(v::bigint), 0) FROM jsonb_each_text(sizes"
            " || jsonb_build_object($2::text, $3::bigint)) AS e(k, v)) WHERE media_id=$1",
            media_id, str(index), size,
        )  # fmt: skip
        return got[0] if got else None

    async def _uploads_returning(self, sql: str, *args: Any) -> list[WebUploadRow]:
        rows = await self._rows(f"{sql} RETURNING {_UP_COLS}", *args)
        return [WebUploadRow.from_row(r) for r in rows]

    async def web_upload_drop(self, media_ids: Sequence[str]) -> None:
        if media_ids:
            async with self._conn() as c:
                await c.execute(
                    "DELETE FROM web_uploads WHERE media_id = ANY($1::text[])", list(media_ids)
                )

    async def web_uploads_older(self, created_before: float, limit: int) -> list[WebUploadRow]:
        return await self._uploads("created<$1 ORDER BY created LIMIT $2", created_before, limit)

    async def web_upload_totals(self) -> tuple[int, int]:
        rows = await self._rows("SELECT count(*), coalesce(sum(spooled), 0) FROM web_uploads")
        return int(rows[0][0]), int(rows[0][1])

    # ---------------------------------------------------------------- accounts
    async def list_accounts(self, after: int, limit: int) -> list[AccountListing]:
        rows = await self._rows(
            "SELECT uin, user_name, nick_name, created FROM accounts WHERE uin>$1"
            " ORDER BY uin LIMIT $2",
            after, limit,
        )  # fmt: skip
        return [AccountListing(int(r[0]), r[1], r[2], int(r[3])) for r in rows]
