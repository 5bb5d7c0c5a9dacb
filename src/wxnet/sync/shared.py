"""What workers and nodes share beyond the message path, as the stores keep it: QR logins
of the web side, the metadata of web uploads in progress, and the account list of
``wxnet user list``.

Both stores implement :class:`SharedState` (``sync/sqlite_shared.py``,
``sync/pg_shared.py``), so a QR login made on one process is polled, scanned and
redeemed on any other, and a chunked web upload may send each chunk to another process.
The rules (what a scan may do, when a login expires, which upload makes room) live in
``server/web/login.py`` and ``server/web/spool.py``; a store only keeps rows and makes
each change atomic (compare-and-set on a version, one transaction for a create and the
evictions it needs).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import astuple, dataclass
from typing import Any, Protocol

__all__ = ["AccountListing", "QrLoginRow", "SharedState", "WebUploadRow"]


@dataclass(frozen=True, slots=True)
class QrLoginRow:
    """A QR login as stored. ``key`` is the SHA-256 of its uuid (hex) and ``ticket`` is
    sealed with the uuid (``server/web/login.py``), so a copy of the store can neither
    poll a login nor redeem one. ``holder`` is the address key the fair caps count;
    ``push_uuid`` is set for a push login (its uuid is in the account's log anyway, the
    prompt carries it), so that the phone can approve it without knowing the uuid."""

    key: str
    created: float
    expires: float
    state: str
    uin: int
    ticket: str
    version: int
    user_agent: str
    address: str
    holder: str
    push_uuid: str

    @classmethod
    def from_row(cls, r: Sequence[Any]) -> QrLoginRow:
        """A row of ``qr_logins`` (every store selects its columns in this order)."""
        return cls(
            r[0], float(r[1]), float(r[2]), r[3], int(r[4]), r[5], int(r[6]), r[7], r[8], r[9],
            r[10],
        )  # fmt: skip

    def values(self) -> tuple[Any, ...]:
        return astuple(self)


@dataclass(frozen=True, slots=True)
class WebUploadRow:
    """A web upload (``webwxuploadmedia``) as stored: which session (``sid_key``, the
    SHA-256 of its wxsid) and account it belongs to, the client's identity of the file
    (``ident``), its declared size and chunk count, and the size of every chunk on the
    shared spool so far. The chunk files are named by ``media_id``."""

    media_id: str
    sid_key: str
    uin: int
    ident: str
    total: int
    chunks: int
    sizes: dict[int, int]
    created: float
    done: bool
    sent: bool

    @property
    def spooled(self) -> int:
        return sum(self.sizes.values())

    @classmethod
    def from_row(cls, r: Sequence[Any]) -> WebUploadRow:
        """A row of ``web_uploads`` (its ``spooled`` column, the sum of ``sizes``, is
        for the stores' totals and not read back)."""
        sizes = {int(k): int(v) for k, v in json.loads(r[6]).items()}
        return cls(
            r[0], r[1], int(r[2]), r[3], int(r[4]), int(r[5]), sizes, float(r[8]), bool(r[9]),
            bool(r[10]),
        )  # fmt: skip

    def values(self) -> tuple[Any, ...]:
        return (
            self.media_id, self.sid_key, self.uin, self.ident, self.total, self.chunks,
            json.dumps({str(k): v for k, v in sorted(self.sizes.items())}), self.spooled,
            self.created, self.done, self.sent,
        )  # fmt: skip


@dataclass(frozen=True, slots=True)
class AccountListing:
    uin: int
    user_name: str
    nick_name: str
    created: int


class SharedState(Protocol):
    """The store's part of the state every process shares (the ``Store`` has it)."""

    # -- QR logins ---------------------------------------------------------------------
    async def qr_login_create(
        self, row: QrLoginRow, per_holder: int, max_pending: int, max_rows: int
    ) -> tuple[bool, list[str]]:
        """Insert ``row`` (a new waiting login) in one transaction with what makes room:
        logins expired by ``row.created`` are deleted; if ``row.holder`` holds
        ``per_holder`` waiting logins, its oldest go; if ``max_pending`` are waiting in
        all, the oldest of the holder with the most goes. Refused (False) when
        ``max_rows`` logins (waiting or scanned) are left. Returns (inserted, keys of
        the logins evicted to make room)."""
        ...

    async def qr_login(self, key: str) -> QrLoginRow | None: ...

    async def qr_login_update(self, row: QrLoginRow, version: int) -> bool:
        """Replace the login ``row.key`` by ``row`` if its stored version is still
        ``version`` (compare-and-set); False when another process changed it first."""
        ...

    async def qr_login_redeem(self, key: str, ticket: str, now: float) -> int | None:
        """Mark a confirmed, unexpired login ``used`` if ``ticket`` is its ticket, once;
        returns the approving uin, else None."""
        ...

    async def qr_login_push(self, uin: int, now: float) -> str:
        """The uuid of ``uin``'s newest unexpired push login not yet approved ("")."""
        ...

    async def drop_qr_logins(self, now: float) -> int:
        """Delete logins expired by ``now``; returns how many are left."""
        ...

    # -- web uploads -------------------------------------------------------------------
    async def web_upload(self, media_id: str) -> WebUploadRow | None: ...
    async def web_upload_by_ident(self, sid_key: str, ident: str) -> WebUploadRow | None: ...
    async def web_uploads_of(self, uin: int) -> list[WebUploadRow]:
        """Every upload of account ``uin`` (oldest first)."""
        ...

    async def web_upload_put(self, row: WebUploadRow) -> None:
        """Insert or replace the upload ``row.media_id``."""
        ...

    async def web_upload_chunk(self, media_id: str, index: int, size: int) -> WebUploadRow | None:
        """Record chunk ``index`` (``size`` bytes) of the upload, atomically with the
        other chunks arriving at other processes; returns the row as it is now (None:
        the upload is gone)."""
        ...

    async def web_upload_drop(self, media_ids: Sequence[str]) -> None: ...

    async def web_uploads_older(self, created_before: float, limit: int) -> list[WebUploadRow]:
        """At most ``limit`` uploads begun before ``created_before`` (oldest first)."""
        ...

    async def web_upload_totals(self) -> tuple[int, int]:
        """(uploads, bytes spooled) of every process."""
        ...

    # -- accounts (wxnet user list) ----------------------------------------------------
    async def list_accounts(self, after: int, limit: int) -> list[AccountListing]:
        """Up to ``limit`` accounts with a uin above ``after``, in uin order."""
        ...
