"""The embedded store's part of the shared state (:class:`wxnet.sync.shared.SharedState`):
QR logins, web uploads' metadata and the account list, on the writer thread and the
loop's read connection of :class:`~wxnet.sync.sqlite_base.SQLiteBase`.

With SQLite there is one process, so nothing here is shared with another one; the rows
are the same as PostgreSQL's so that the web side has one code path for both.
"""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Sequence

from wxnet.sync.shared import AccountListing, QrLoginRow, WebUploadRow
from wxnet.sync.sqlite_base import SQLiteBase

__all__ = ["SQLiteShared", "evict_for"]

_QR_COLS = (
    "key, created, expires, state, uin, ticket, version, user_agent, address, holder, push_uuid"
)
_UP_COLS = "media_id, sid_key, uin, ident, total, chunks, sizes, spooled, created, done, sent"


def evict_for(
    conn: sqlite3.Connection, holder: str, now: float, per_holder: int, max_pending: int
) -> list[str]:
    """Inside the caller's transaction: delete what a new waiting login of ``holder``
    needs gone (the fair caps of :meth:`SharedState.qr_login_create`); returns the keys."""
    conn.execute("DELETE FROM qr_logins WHERE expires<=?", (now,))
    gone: list[str] = []
    held = [
        r[0]
        for r in conn.execute(
            "SELECT key FROM qr_logins WHERE holder=? AND state='waiting' ORDER BY created, key",
            (holder,),
        )
    ]
    gone += held[: max(0, len(held) - per_holder + 1)]
    conn.executemany("DELETE FROM qr_logins WHERE key=?", [(k,) for k in gone])
    while True:
        (waiting,) = conn.execute("SELECT count(*) FROM qr_logins WHERE state='waiting'").fetchone()
        if waiting < max_pending or not waiting:
            return gone
        (key,) = conn.execute(
            "SELECT key FROM qr_logins WHERE state='waiting' AND holder=(SELECT holder"
            " FROM qr_logins WHERE state='waiting' GROUP BY holder"
            " ORDER BY count(*) DESC, min(created) LIMIT 1) ORDER BY created, key LIMIT 1"
        ).fetchone()
        conn.execute("DELETE FROM qr_logins WHERE key=?", (key,))
        gone.append(key)


class SQLiteShared(SQLiteBase):
    """A base of :class:`~wxnet.sync.sqlite_store.SQLiteStore`."""

    # ---------------------------------------------------------------- QR logins
    async def qr_login_create(
        self, row: QrLoginRow, per_holder: int, max_pending: int, max_rows: int
    ) -> tuple[bool, list[str]]:
        def w(conn: sqlite3.Connection) -> tuple[bool, list[str]]:
            gone = evict_for(conn, row.holder, row.created, per_holder, max_pending)
            (n,) = conn.execute("SELECT count(*) FROM qr_logins").fetchone()
            if n >= max_rows:
                return False, gone
            conn.execute(f"INSERT INTO qr_logins ({_QR_COLS}) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                         row.values())  # fmt: skip
            return True, gone

        return await self.db.write(w)

    async def qr_login(self, key: str) -> QrLoginRow | None:
        rows = self.db.read_now(
            lambda c: c.execute(f"SELECT {_QR_COLS} FROM qr_logins WHERE key=?", (key,)).fetchall()
        )
        return QrLoginRow.from_row(rows[0]) if rows else None

    async def qr_login_update(self, row: QrLoginRow, version: int) -> bool:
        def w(conn: sqlite3.Connection) -> bool:
            cur = conn.execute(
                "UPDATE qr_logins SET state=?, uin=?, ticket=?, version=?, expires=?"
                " WHERE key=? AND version=?",
                (row.state, row.uin, row.ticket, row.version, row.expires, row.key, version),
            )
            return cur.rowcount == 1

        return await self.db.write(w)

    async def qr_login_redeem(self, key: str, ticket: str, now: float) -> int | None:
        def w(conn: sqlite3.Connection) -> int | None:
            r = conn.execute(
                "UPDATE qr_logins SET state='used', version=version+1 WHERE key=? AND"
                " ticket=? AND ticket!='' AND state='confirmed' AND expires>? RETURNING uin",
                (key, ticket, now),
            ).fetchone()
            return None if r is None else int(r[0])

        return await self.db.write(w)

    async def qr_login_push(self, uin: int, now: float) -> str:
        rows = self.db.read_now(
            lambda c: c.execute(
                "SELECT push_uuid FROM qr_logins WHERE uin=? AND push_uuid!='' AND"
                " state IN ('waiting', 'scanned') AND expires>? ORDER BY created DESC LIMIT 1",
                (uin, now),
            ).fetchall()
        )
        return str(rows[0][0]) if rows else ""

    async def drop_qr_logins(self, now: float) -> int:
        def w(conn: sqlite3.Connection) -> int:
            conn.execute("DELETE FROM qr_logins WHERE expires<=?", (now,))
            return int(conn.execute("SELECT count(*) FROM qr_logins").fetchone()[0])

        return await self.db.write(w)

    # ---------------------------------------------------------------- web uploads
    def _uploads(self, where: str, args: tuple[object, ...]) -> list[WebUploadRow]:
        rows = self.db.read_now(
            lambda c: c.execute(f"SELECT {_UP_COLS} FROM web_uploads WHERE {where}", args)
            .fetchall()
        )  # fmt: skip
        return [WebUploadRow.from_row(r) for r in rows]

    async def web_upload(self, media_id: str) -> WebUploadRow | None:
        got = self._uploads("media_id=?", (media_id,))
        return got[0] if got else None

    async def web_upload_by_ident(self, sid_key: str, ident: str) -> WebUploadRow | None:
        got = self._uploads("sid_key=? AND ident=? ORDER BY created DESC LIMIT 1", (sid_key, ident))
        return got[0] if got else None

    async def web_uploads_of(self, uin: int) -> list[WebUploadRow]:
        return self._uploads("uin=? ORDER BY created, media_id", (uin,))

    async def web_upload_put(self, row: WebUploadRow) -> None:
        await self.db.write(
            lambda c: c.execute(
                f"INSERT OR REPLACE INTO web_uploads ({_UP_COLS}) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                row.values(),
            )
        )

    async def web_upload_chunk(self, media_id: str, index: int, size: int) -> WebUploadRow | None:
        def w(conn: sqlite3.Connection) -> WebUploadRow | None:
            r = conn.execute(
                f"SELECT {_UP_COLS} FROM web_uploads WHERE media_id=?", (media_id,)
            ).fetchone()
            if r is None:
                return None
            row = WebUploadRow.from_row(r)
            new = dataclasses.replace(row, sizes={**row.sizes, index: size})
            v = new.values()
            conn.execute(
                "UPDATE web_uploads SET sizes=?, spooled=? WHERE media_id=?", (v[6], v[7], media_id)
            )
            return new

        return await self.db.write(w)

    async def web_upload_drop(self, media_ids: Sequence[str]) -> None:
        if media_ids:
            await self.db.write(
                lambda c: c.executemany(
                    "DELETE FROM web_uploads WHERE media_id=?", [(m,) for m in media_ids]
                )
            )

    async def web_uploads_older(self, created_before: float, limit: int) -> list[WebUploadRow]:
        return self._uploads("created<? ORDER BY created LIMIT ?", (created_before, limit))

    async def web_upload_totals(self) -> tuple[int, int]:
        r = self.db.read_now(
            lambda c: c.execute("SELECT count(*), coalesce(sum(spooled), 0) FROM web_uploads")
            .fetchone()
        )  # fmt: skip
        return int(r[0]), int(r[1])

    # ---------------------------------------------------------------- accounts
    async def list_accounts(self, after: int, limit: int) -> list[AccountListing]:
        rows = self.db.read_now(
            lambda c: c.execute(
                "SELECT uin, user_name, nick_name, created FROM accounts WHERE uin>?"
                " ORDER BY uin LIMIT ?",
                (after, limit),
            ).fetchall()
        )
        return [AccountListing(int(r[0]), r[1], r[2], int(r[3])) for r in rows]
