"""QR logins and web sessions: their rules (time is passed in) and how they are kept in
the server's store, so that every worker and node sees the same ones.

A QR login goes ``WAITING -> SCANNED -> CONFIRMED -> USED``; any state may go to
``EXPIRED``. Each change is a new version of the login, set in the store only if nobody
changed it meanwhile (:meth:`QrLogins.scan`), so two processes never both approve one.
Only a logged-in mobile device moves it (``scanqrcode``; docs/web.md, "Security"): the
browser or web client merely reads it through the login poll. Confirming mints a one-time
``ticket``; exchanging that ticket at webwxnewloginpage creates the :class:`WebSession`.

A web session is known by ``wxsid`` (at least 128 random bits, bound to ``wxuin``); the
other tokens it carries (skey, pass_ticket, webwx_data_ticket) are handed out but never
needed to authenticate, because real clients send junk in them (docs/web.md, "Security").
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import secrets
from dataclasses import dataclass, field
from typing import Protocol

from wxnet.proto.errors import WxnetError
from wxnet.proto.web import is_token
from wxnet.sync.shared import QrLoginRow, SharedState
from wxnet.sync.store import WebSessionRow

__all__ = [
    "LoginState",
    "QrLogin",
    "QrLoginError",
    "QrLoginRefused",
    "QrLoginUnknown",
    "QrLogins",
    "WebSession",
    "WebSessionStore",
    "WebSessions",
    "WebStore",
    "new_token",
    "qr_key",
]


class QrLoginError(WxnetError):
    """A QR login cannot go on (the tree is drawn in wxnet.proto.errors)."""


class QrLoginUnknown(QrLoginError):
    """No such QR login, or it expired."""


class QrLoginRefused(QrLoginError):
    """Another account scanned the code, or it was already approved."""


def new_token(nbytes: int = 16) -> str:
    """A URL-safe random token (``[A-Za-z0-9_-]``, safe in itchat's hand-built URLs) of
    ``nbytes`` entropy.
    It never starts with ``-``, so that ``wxnet scan UUID`` does not take it for an
    option (an ``x`` takes its place: a first character of 63 kinds, not 64)."""
    token = secrets.token_urlsafe(nbytes)
    return "x" + token[1:] if token.startswith("-") else token


class LoginState(enum.Enum):
    WAITING = "waiting"
    SCANNED = "scanned"
    CONFIRMED = "confirmed"
    USED = "used"
    EXPIRED = "expired"


@dataclass(slots=True)
class QrLogin:
    uuid: str
    created: float
    expires: float
    state: LoginState = LoginState.WAITING
    uin: int = 0  # the approving account
    ticket: str = ""
    version: int = 0  # bumped on every change; login polls wait for a newer one
    user_agent: str = ""  # who asked for it (jslogin's User-Agent), shown to the phone
    address: str = ""  # and from where (the TCP peer)
    push: bool = False  # a push login (webwxpushloginurl): only ``uin`` may approve it
    holder: str = ""  # the address key the fair caps count it against

    @property
    def key(self) -> str:
        """What the store keys it by: the SHA-256 of the uuid (hex)."""
        return qr_key(self.uuid)

    def poll_code(self, now: float) -> int:
        """The login-poll code of the current state."""
        if self.state is LoginState.EXPIRED or now >= self.expires:
            return 400
        if self.state is LoginState.SCANNED:
            return 201
        if self.state in (LoginState.CONFIRMED, LoginState.USED):
            return 200
        return 408

    def scanned(self, uin: int, now: float, *, confirm: bool) -> QrLogin:
        """The login after a mobile device of ``uin`` scanned (and with ``confirm``
        approved) it: a new object, one version on (the store sets it if nobody changed
        the login meanwhile).

        Raises:
            QrLoginUnknown: the login expired.
            QrLoginRefused: another account scanned it, it asks another account (a push
                login), or it was already approved.
        """
        if self.state is LoginState.EXPIRED or now >= self.expires:
            raise QrLoginUnknown(f"no QR login {self.uuid[:40]!r} (expired?)")
        if self.uin and self.uin != uin:
            if self.push:
                raise QrLoginRefused("this login asks another account")
            raise QrLoginRefused("another account scanned this code")
        if self.state in (LoginState.CONFIRMED, LoginState.USED):
            raise QrLoginRefused("this code was already approved")
        state = LoginState.CONFIRMED if confirm else LoginState.SCANNED
        ticket = new_token() if confirm else ""
        return dataclasses.replace(
            self, state=state, uin=uin, ticket=ticket, version=self.version + 1
        )

    def row(self) -> QrLoginRow:
        """The login as the store keeps it: keyed by the uuid's hash, ticket sealed."""
        return QrLoginRow(
            self.key, self.created, self.expires, self.state.value, self.uin,
            seal(self.uuid, "qr ticket", self.ticket) if self.ticket else "", self.version,
            self.user_agent, self.address, self.holder, self.uuid if self.push else "",
        )  # fmt: skip

    @classmethod
    def from_row(cls, uuid: str, r: QrLoginRow) -> QrLogin:
        """The login of ``uuid`` from its stored row (the uuid unseals the ticket)."""
        return cls(
            uuid, r.created, r.expires, LoginState(r.state), r.uin,
            unseal(uuid, "qr ticket", r.ticket) if r.ticket else "", r.version,
            r.user_agent, r.address, bool(r.push_uuid), r.holder,
        )  # fmt: skip


def qr_key(uuid: str) -> str:
    return hashlib.sha256(b"wxnet qr\0" + uuid.encode()).hexdigest()


class QrLogins:
    """Every pending QR login, in the store (any process polls, scans and redeems a
    login another one made), bounded in number and lifetime.

    Args:
        store: where the logins are (the server's store).
        ttl: a login's lifetime (``[web] qr_ttl``).
        max_pending: waiting logins in all (``qr_max_pending``); scanned ones do not
            count (their phone holds them), and the rows in all are bounded by twice it.
        per_address: waiting logins one address key holds (``qr_pending_per_address``).
    """

    def __init__(
        self, store: SharedState, ttl: float = 300.0, max_pending: int = 10_000,
        per_address: int = 16,
    ) -> None:  # fmt: skip
        self.store = store
        self.ttl = ttl
        self.max_pending = max_pending
        self.per_address = max(1, per_address)
        self.held = 0  # rows in the store at the last create or sweep (a gauge)

    def __len__(self) -> int:
        return self.held

    async def create(
        self, now: float, holder: str = "", *, user_agent: str = "", address: str = "",
        push_uin: int = 0,
    ) -> tuple[QrLogin | None, list[str]]:  # fmt: skip
        """A new QR login held for ``holder``, and the keys of the logins evicted to make
        room for it (their polls see 400); None when only scanned logins are left."""
        q = QrLogin(new_token(), now, now + self.ttl, user_agent=user_agent, address=address,
                    uin=push_uin, push=bool(push_uin), holder=holder)  # fmt: skip
        ok, gone = await self.store.qr_login_create(
            q.row(), self.per_address, self.max_pending, 2 * self.max_pending
        )
        self.held = max(0, self.held + int(ok) - len(gone))
        return (q if ok else None), gone

    async def get(self, uuid: str, now: float) -> QrLogin | None:
        """The login (EXPIRED once past its lifetime), or None: unknown or swept."""
        if not is_token(uuid):
            return None
        r = await self.store.qr_login(qr_key(uuid))
        if r is None:
            return None
        q = QrLogin.from_row(uuid, r)
        if now >= q.expires:
            q.state = LoginState.EXPIRED
        return q

    async def scan(self, uuid: str, uin: int, now: float, *, confirm: bool) -> QrLogin:
        """A mobile device of ``uin`` scanned (and with ``confirm`` approved) ``uuid``:
        the change is set in the store only if no other process changed the login
        meanwhile (then it is read and judged again).

        Raises:
            QrLoginUnknown: an unknown or expired uuid.
            QrLoginRefused: see :meth:`QrLogin.scanned`.
        """
        for _ in range(4):
            q = await self.get(uuid, now)
            if q is None:
                raise QrLoginUnknown(f"no QR login {uuid[:40]!r} (expired?)")
            new = q.scanned(uin, now, confirm=confirm)
            if await self.store.qr_login_update(new.row(), q.version):
                return new
        raise QrLoginRefused("this code is being scanned elsewhere; scan it again")

    async def redeem(self, ticket: str, uuid: str, now: float) -> int | None:
        """Exchange a confirmed login's ticket (once) for the approving uin."""
        if not (is_token(ticket) and is_token(uuid)):
            return None
        return await self.store.qr_login_redeem(qr_key(uuid), seal(uuid, "qr ticket", ticket), now)

    async def push_pending(self, uin: int, now: float) -> str:
        """The uuid of the account's newest push login waiting for approval ("")."""
        return await self.store.qr_login_push(uin, now)

    async def expire(self, now: float) -> int:
        """Delete logins past their lifetime (their polls see 400); returns how many
        are left in the store."""
        self.held = await self.store.drop_qr_logins(now)
        return self.held


@dataclass(slots=True)
class WebSession:
    """One logged-in web client: a device of account ``uin``."""

    wxsid: str
    uin: int
    user_name: str  # wxnet name of the account
    nick_name: str
    session_key: str  # the mobile-protocol session this web device uses
    skey: str
    pass_ticket: str
    data_ticket: str
    expires: float
    alive: bool = True
    sent: dict[str, None] = field(default_factory=dict)  # own ClientMsgIds, to not echo
    committed: bytes = b""  # the newest key this process committed for it (in memory)
    inits: int = 0  # webwxinits served here: a poll held across one answers 0

    def remember_sent(self, client_msg_id: str, keep: int = 1000) -> None:
        self.sent[client_msg_id] = None
        while len(self.sent) > keep:
            del self.sent[next(iter(self.sent))]


class WebSessionStore(Protocol):
    """Where web sessions outlive the process (the server's :class:`Store`)."""

    async def save_web_session(self, row: WebSessionRow) -> None: ...
    async def web_session(self, key: str) -> WebSessionRow | None: ...
    async def drop_web_sessions(self, before: float) -> int: ...


class WebStore(SharedState, WebSessionStore, Protocol):
    """All the web side keeps in the server's store: web sessions, QR logins, uploads."""


#: Prefix of the store key of a browser's login (:meth:`WebSessions.remember_browser`):
#: ``:`` is not in the token alphabet, so no wxsid hashes to such a key.
_BROWSER = "browser:"


def sid_key(wxsid: str) -> str:
    """What the store keys a web session by: the SHA-256 of its wxsid (hex)."""
    return hashlib.sha256(wxsid.encode()).hexdigest()


_SEALED = "s1:"


def _pad(wxsid: str, label: str, n: int) -> bytes:
    return hashlib.shake_256(f"wxnet web session {label}\0{wxsid}".encode()).digest(n)


def seal(wxsid: str, label: str, value: str) -> str:
    """``value`` (a token of the session: its mobile session key, skey, tickets) as the
    store keeps it: XORed with a pad drawn from the wxsid and ``label``. The store holds
    only the wxsid's SHA-256, so a copy of it opens no session and holds no mobile
    session key (as device sessions keep only hashes); the process that is handed the
    wxsid by the client recovers the value. Each (wxsid, label) pad is used once."""
    raw = value.encode()
    return _SEALED + _xor(raw, _pad(wxsid, label, len(raw))).hex()


def unseal(wxsid: str, label: str, stored: str) -> str:
    """The value :func:`seal` stored; a row written before sealing is plain text."""
    if not stored.startswith(_SEALED):
        return stored
    raw = bytes.fromhex(stored[len(_SEALED) :])
    return _xor(raw, _pad(wxsid, label, len(raw))).decode()


def _xor(a: bytes, b: bytes) -> bytes:
    return (int.from_bytes(a) ^ int.from_bytes(b)).to_bytes(len(a))


def _plain(row: WebSessionRow) -> bool:
    return not row.session_key.startswith(_SEALED)


class WebSessions:
    """Web sessions by wxsid. Lookups check the uin and the expiry.

    With a ``store`` every session is also saved there (:meth:`save`, awaited before a
    login or logout is answered), and a wxsid unknown here is looked up there
    (:meth:`lookup`): a session made by another process, or before a restart, works.
    What a session holds only in memory (pending upload chunks, its own ClientMsgIds)
    stays with the process."""

    def __init__(
        self,
        ttl: float = 7 * 86400.0,
        per_account: int = 16,
        store: WebSessionStore | None = None,
    ) -> None:
        self.ttl = ttl
        self.per_account = per_account
        self.store = store
        self._by_sid: dict[str, WebSession] = {}
        self._ended: list[WebSession] = []
        self._browsers: dict[str, tuple[int, float]] = {}  # auth ticket -> (uin, expires)

    async def save(self, s: WebSession) -> None:
        """Make ``s`` (new, or ended) durable, if there is a store; also the sessions
        that :meth:`add` ended to make room."""
        ended, self._ended = self._ended, []
        if self.store is None:
            return
        for old in (*ended, s):
            await self._save(old)

    async def _save(self, s: WebSession) -> None:
        if self.store is not None:
            sid = s.wxsid
            await self.store.save_web_session(
                WebSessionRow(
                    sid_key(sid),
                    s.uin,
                    s.user_name,
                    s.nick_name,
                    seal(sid, "session_key", s.session_key),
                    seal(sid, "skey", s.skey),
                    seal(sid, "pass_ticket", s.pass_ticket),
                    seal(sid, "data_ticket", s.data_ticket),
                    s.expires,
                    s.alive,
                )
            )

    async def lookup(self, uin: int, wxsid: str, now: float) -> WebSession | None:
        """:meth:`find`, falling back to the store for a wxsid not held here."""
        if self.store is not None and is_token(wxsid) and wxsid not in self._by_sid:
            row = await self.store.web_session(sid_key(wxsid))
            if row is not None and wxsid not in self._by_sid:
                s = self._by_sid[wxsid] = WebSession(
                    wxsid,
                    row.uin,
                    row.user_name,
                    row.nick_name,
                    unseal(wxsid, "session_key", row.session_key),
                    unseal(wxsid, "skey", row.skey),
                    unseal(wxsid, "pass_ticket", row.pass_ticket),
                    unseal(wxsid, "data_ticket", row.data_ticket),
                    row.expires,
                    row.alive,
                )
                if _plain(row):  # written before sealing: seal it now
                    await self._save(s)
        return self.find(uin, wxsid, now)

    async def remember_browser(self, s: WebSession) -> None:
        """Remember that the browser holding ``s``'s ``webwx_auth_ticket`` cookie (its
        pass_ticket) logged in as ``s.uin``, until ``s`` would have expired, however it
        ends: a push login (webwxpushloginurl) from that browser may prompt the phone.
        Kept in the store as a dead session row under a key no wxsid hashes to."""
        self._browsers[s.pass_ticket] = (s.uin, s.expires)
        while len(self._browsers) > 4 * 1024:
            del self._browsers[next(iter(self._browsers))]
        if self.store is not None:
            await self.store.save_web_session(
                WebSessionRow(
                    sid_key(_BROWSER + s.pass_ticket),
                    s.uin, s.user_name, s.nick_name, "", "", "", "", s.expires, False,
                )
            )  # fmt: skip

    async def browser_uin(self, auth_ticket: str, now: float) -> int | None:
        """The account a browser with this ``webwx_auth_ticket`` logged in as (and
        may ask to log in as again), if that login is not past its expiry."""
        if not is_token(auth_ticket):
            return None
        uin, expires = self._browsers.get(auth_ticket, (0, 0.0))
        if not uin and self.store is not None:
            row = await self.store.web_session(sid_key(_BROWSER + auth_ticket))
            if row is not None:
                uin, expires = row.uin, row.expires
        return uin if uin and now < expires else None

    async def sweep_store(self, now: float, grace: float = 3600.0) -> int:
        return 0 if self.store is None else await self.store.drop_web_sessions(now - grace)

    def __len__(self) -> int:
        return len(self._by_sid)

    def add(
        self, uin: int, user_name: str, nick_name: str, session_key: str, now: float
    ) -> WebSession:
        mine = sorted((s for s in self._by_sid.values() if s.uin == uin), key=lambda s: s.expires)
        for old in mine[: max(0, len(mine) - self.per_account + 1)]:
            self.end(old.wxsid)  # the oldest web login of the account makes room
            self._ended.append(old)  # saved as ended with the next save()
        s = WebSession(
            wxsid=new_token(),
            uin=uin,
            user_name=user_name,
            nick_name=nick_name,
            session_key=session_key,
            skey="@crypt_" + secrets.token_hex(4) + "_" + secrets.token_hex(16),
            pass_ticket=new_token(),
            data_ticket=new_token(),
            expires=now + self.ttl,
        )
        self._by_sid[s.wxsid] = s
        return s

    def find(self, uin: int, wxsid: str, now: float) -> WebSession | None:
        """The live session with this wxsid, if it belongs to ``uin``; else None."""
        s = self._by_sid.get(wxsid)
        if s is None or s.uin != uin or not secrets.compare_digest(s.wxsid, wxsid):
            return None
        if now >= s.expires:
            self.end(wxsid)
        return s

    def end(self, wxsid: str, now: float | None = None) -> WebSession | None:
        """Log a session out. It stays findable (dead) for a grace period so that its
        clients learn of it (1101); :meth:`sweep` forgets it after that."""
        s = self._by_sid.get(wxsid)
        if s is not None:
            s.alive = False
            if now is not None:
                s.expires = min(s.expires, now)
        return s

    def sweep(self, now: float, grace: float = 3600.0) -> int:
        """Forget sessions dead or expired for longer than ``grace``."""
        gone = [sid for sid, s in self._by_sid.items() if now >= s.expires + grace]
        for sid in gone:
            del self._by_sid[sid]
        return len(gone)

    def of_account(self, uin: int) -> list[WebSession]:
        return [s for s in self._by_sid.values() if s.uin == uin and s.alive]
