"""``webwxhistory``: a conversation's earlier messages from the server's log (wxnet's own
endpoint; real Web WeChat has none, its page starts from what webwxsync brings).

A web session starts at the log's head (webwxinit), so without this a conversation opens
empty. The account's message log already holds every message it sent and received, its
read receipts and recalls, in order; :class:`HistoryScan` walks it backwards from a
cursor and keeps one conversation's messages (or every conversation's), newest first,
as the same JSON objects webwxsync sends. It is pure: the handler feeds it the log in
batches read through the backend, so its paging and caps are tested without I/O.

Request (POST JSON): ``{"BaseRequest": ..., "UserName": "@..." (or "" for every
conversation), "Count": 30, "Before": 0}``. Reply: ``MsgList`` (newest first),
``Count``, ``Next`` (pass it as ``Before`` for the page before; 0 once the log's start is
reached) and, on the first page (``Before`` 0), ``UnreadList``: per conversation, the
messages from others after the account's last read receipt or reply there.

Caps (docs/server.md "Limits"): ``Count`` at most ``[web] history_max_count`` (more is
cut to it), and at most ``[web] history_max_scan`` log items read per request (a sparse
conversation then gets a short page with a ``Next`` to go on from); both counted in
``wxnet_web_limited_total``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web
from google.protobuf.message import DecodeError

from wxnet.proto import web as wp
from wxnet.proto import wxnet_pb2 as pb
from wxnet.proto.enums import CmdId
from wxnet.proto.errors import MMError, MMRet
from wxnet.server.web import convert
from wxnet.server.web.common import SessionGone, WebError

if TYPE_CHECKING:
    from wxnet.server.web.api import WebApi
    from wxnet.server.web.login import WebSession

__all__ = ["DEFAULT_COUNT", "HistoryEndpoint", "HistoryPage", "HistoryScan"]

#: Messages per page when the request does not say.
DEFAULT_COUNT = 30
#: Log items read per backend call (one indexed range query of the store).
BATCH = 200


@dataclass(slots=True)
class HistoryPage:
    msgs: list[dict[str, Any]]  # newest first
    next: int  # the Before of the page before; 0 at the log's start
    unread: dict[str, int]  # web UserName -> unread messages (first page only)
    scan_capped: bool  # stopped at max_scan before the page was full


@dataclass(slots=True)
class HistoryScan:
    """One page of history, fed the log newest first.

    Args:
        me: the account's wxnet name.
        peer: the web UserName of the conversation, or "" for all of them.
        count: messages wanted.
        max_scan: log items to read at most.
        before: the cursor (a log sequence number; the page ends before it), 0 = the head.
        now: the time given to recall notices, whose log items carry none.

    Call :meth:`wanted`, read that many items before :attr:`cursor` (newest first), pass
    them to :meth:`feed`; repeat until :meth:`wanted` is 0; then :meth:`page`.
    """

    me: str
    peer: str
    count: int
    max_scan: int
    before: int = 0
    now: int = 0
    cursor: int = 0  # read items with seq below this (0: from the head)
    scanned: int = 0
    msgs: list[dict[str, Any]] = field(default_factory=list)
    unread: dict[str, int] = field(default_factory=dict)
    _read: set[str] = field(default_factory=set)  # conversations read from here back
    _recalled: set[int] = field(default_factory=set)  # ids whose recall was seen
    _at_start: bool = False
    _me_web: str = ""
    _peer_name: str = ""  # the wxnet name behind peer

    def __post_init__(self) -> None:
        self.cursor = self.before
        self._me_web = wp.web_user_name(self.me)
        self._peer_name = wp.decode_web_name(self.peer)[0] if self.peer else ""

    def wanted(self) -> int:
        if self._at_start or len(self.msgs) >= self.count:
            return 0
        return min(BATCH, self.max_scan - self.scanned)

    def feed(self, items: Sequence[tuple[int, bytes]], asked: int) -> None:
        """``items``: ``(seq, CmdItem bytes)`` below :attr:`cursor`, newest first; fewer
        than ``asked`` means the log's start was reached."""
        for seq, body in items:
            self.scanned += 1
            self.cursor = seq
            self._take(body)
            if len(self.msgs) >= self.count:
                return
        if len(items) < asked:
            self._at_start = True

    def page(self) -> HistoryPage:
        full = len(self.msgs) >= self.count
        nxt = 0 if self._at_start or self.cursor <= 1 else self.cursor
        capped = not full and not self._at_start and self.scanned >= self.max_scan
        unread = {k: v for k, v in self.unread.items() if v} if self.before == 0 else {}
        return HistoryPage(self.msgs, nxt, unread, capped)

    def _take(self, body: bytes) -> None:
        item = pb.CmdItem()
        try:
            item.ParseFromString(body)
        except DecodeError:
            return  # not ours to show; the log is the server's own, so never expected
        kind = item.WhichOneof("body")
        if kind == "msg_status":
            st = item.msg_status
            if st.reader == self.me:
                self._read.add(wp.web_name(st.talker, convert.is_chatroom(st.talker)))
            return
        if kind == "add_msg":
            if self._peer_name and _talker(item.add_msg, self.me) != self._peer_name:
                return  # another conversation: not worth a conversion
            obj = convert.message_obj(item.add_msg, self.me)
        elif kind == "revoke" and item.cmd_id == CmdId.REVOKE:
            self._recalled.add(item.revoke.msg_id)
            if self._peer_name and _talker(item.revoke, self.me) != self._peer_name:
                return
            obj = convert.revoke_obj(item.revoke, self.me, self.now)
        else:
            return
        mine = obj["FromUserName"] == self._me_web
        conv = obj["ToUserName"] if mine else obj["FromUserName"]
        if self.peer and conv != self.peer:
            return
        if mine:
            self._read.add(conv)  # a reply: what came before it was read
        elif (
            kind == "add_msg"
            and conv not in self._read
            and item.add_msg.msg_id not in self._recalled
        ):
            self.unread[conv] = self.unread.get(conv, 0) + 1
        self.msgs.append(obj)


class HistoryEndpoint:
    """The ``webwxhistory`` JSON endpoint of ``api`` (wrap with ``api.json_endpoint``)."""

    def __init__(self, api: WebApi) -> None:
        self.api = api

    async def __call__(
        self, request: web.Request, s: WebSession, body: dict[str, Any]
    ) -> dict[str, Any]:
        api, cfg = self.api, self.api.config
        peer = body.get("UserName", "")
        if not isinstance(peer, str) or (peer and not peer.startswith("@")):
            raise WebError(-1, "UserName must be a web UserName or empty")
        if peer:
            try:
                wp.decode_web_name(peer)
            except wp.WebProtocolError:
                raise WebError(-1, "UserName is not one of this server's names") from None
        count = _int(body.get("Count", DEFAULT_COUNT), "Count")
        before = _int(body.get("Before", 0), "Before")
        if count < 1 or before < 0 or before >= 1 << 63:
            raise WebError(-1, "Count must be positive and Before a log position or 0")
        if count > cfg.history_max_count:
            api.count("history_count")
            count = cfg.history_max_count
        scan = HistoryScan(s.user_name, peer, count, cfg.history_max_scan, before, int(api.clock()))
        try:
            while n := scan.wanted():
                items = await api.backend.message_log(s.session_key, s.uin, scan.cursor, n)
                scan.feed(items, n)
        except MMError as exc:
            if exc.code == MMRet.ERR_SESSIONTIMEOUT:
                api.sessions.end(s.wxsid, api.clock())
                await api.sessions.save(s)
                raise SessionGone("the account's session ended") from None
            raise WebError(int(exc.code), exc.message) from None
        page = scan.page()
        if page.scan_capped:
            api.count("history_scan")
        return {
            "Count": len(page.msgs),
            "MsgList": page.msgs,
            "Next": page.next,
            "UnreadList": [{"UserName": k, "Count": v} for k, v in page.unread.items()],
        }


def _talker(m: pb.AddMsg | pb.RevokeMsg, me: str) -> str:
    """The wxnet name of the conversation a message belongs to, for account ``me``
    (the room, else the other party; as :func:`convert.message_obj` places it)."""
    if convert.is_chatroom(m.from_user):
        return m.from_user
    if convert.is_chatroom(m.to_user) or m.from_user == me:
        return m.to_user
    return m.from_user


def _int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise WebError(-1, f"{name} must be a number")
    try:
        return int(value)
    except ValueError:
        raise WebError(-1, f"{name} must be a number") from None
