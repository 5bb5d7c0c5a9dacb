"""The long link as a sans-IO connection: bytes in, events out; sends return bytes.

One :class:`LongLinkConnection` is one end of one long link, in the role of the
client or of the server (h11's shape: :meth:`~LongLinkConnection.receive_data` turns
bytes into typed events; every ``send_*`` / ``reply*`` / ``notify`` method returns the
bytes to write). It owns the rules of ``docs/protocol.md`` ("Sequence numbers") that
the framing alone does not:

* a client allocates request seqs 1 .. 0xFFFFFFEF, increasing and wrapping, never one
  still in flight; noop goes with seq 0xFFFFFFFF, identify with 0xFFFFFFFE (one at a
  time), the signalling keeper with 0xFFFFFFFD; seq 0 is the server's (pushes);
* a server refuses, as :class:`RemoteProtocolError`: seq 0 from a client, a reserved
  seq on the wrong cmd, identify on another seq than 0xFFFFFFFE, a seq already in
  flight (replies are matched by seq alone, Mars ``longlink.cc``). A noop may still come
  with an ordinary seq (the older clients' form, the seed's ``... 06 00 00 00 0f``);
* a reply goes back with the request's seq and ``cmd + 1_000_000_000``, once; a notify
  is cmd 24, seq 0, a u32 selector; a push with data is cmd 122, seq 0, a
  ``NewSyncResponse`` body (its items carry their key and seq; the client applies them
  with :func:`wxnet.proto.syncdriver.apply_push`), sent only to a link that asked for
  it in identify; a protocol error is cmd 1_000_000_000, seq 0, a
  body with only ``base`` {ret, err_msg} set (as every error reply), after which the
  link is done.

A client that gets a reply it did not ask for, a packet of the server's kinds on a
wrong seq, or undecodable framing raises :class:`RemoteProtocolError` too. After any
protocol error (either side) the connection is closed for good: every later call raises.

The connection owns no deadline: the heartbeat and its noop timeout are
:class:`wxnet.client.heartbeat.HeartbeatTimer`'s, idle and identify deadlines the
server adapter's, so there is no ``get_timer`` here.

Adapters (``wxnet.server.longlink``, ``wxnet.client.longlink``, the lab's probe, the
test and bench clients) only move bytes and keep a ``seq -> Future`` map.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Final

from google.protobuf.message import DecodeError, Message

from wxnet.proto import commands as C
from wxnet.proto import wxnet_pb2 as pb
from wxnet.proto.commands import error_body
from wxnet.proto.enums import LinkCmd, LinkSeq
from wxnet.proto.errors import LocalProtocolError, MMRet, RemoteProtocolError
from wxnet.proto.framing import (
    HEADER,
    HEADER_LEN,
    MAX_PACKET,
    PROTOCOL_VERSION,
    PacketDecoder,
    split_packets,
)
from wxnet.proto.plain import Plain

__all__ = [
    "CLIENT",
    "SERVER",
    "Event",
    "LongLinkConnection",
    "Noop",
    "NoopReply",
    "Notify",
    "Push",
    "RemoteError",
    "Reply",
    "Request",
    "Role",
    "SignalKeep",
    "SyncPush",
    "UnknownCommand",
    "error_body",
    "notify_packet",
    "push_packet",
]

_REPLY = C.REPLY_OFFSET
_NOOP = int(LinkCmd.NOOP)
_NOOP_REPLY = int(LinkCmd.NOOP_REPLY)
_NOTIFY = int(LinkCmd.NOTIFY)
_PUSH_DATA = int(LinkCmd.PUSH)
_SIGNAL_KEEP = int(LinkCmd.SIGNAL_KEEP)
_PROTOCOL_ERROR = int(LinkCmd.PROTOCOL_ERROR)
_IDENTIFY = C.CMD_IDENTIFY
_SEQ_PUSH = int(LinkSeq.PUSH)
_SEQ_NOOP = int(LinkSeq.NOOP)
_SEQ_IDENTIFY = int(LinkSeq.IDENTIFY)
_SEQ_SIGNAL_KEEP = int(LinkSeq.SIGNAL_KEEP)
_FIRST_RESERVED = int(LinkSeq.FIRST_RESERVED)
#: cmd that each reserved seq belongs to
_RESERVED_SEQ_CMD = {_SEQ_NOOP: _NOOP, _SEQ_IDENTIFY: _IDENTIFY, _SEQ_SIGNAL_KEEP: _SIGNAL_KEEP}
_ALL_SELECTORS = 0xFFFFFFFF


class Role(Enum):
    CLIENT = "client"
    SERVER = "server"


CLIENT = Role.CLIENT
SERVER = Role.SERVER


# ---- events -------------------------------------------------------------------------------


class Request(Plain):
    """(server) A request for a CGI of the command table. Answer with ``reply(seq, ...)``.
    (A :class:`~wxnet.proto.plain.Plain`, not a frozen dataclass: one is made per
    request the server gets, and a frozen dataclass's ``__init__`` sets each field
    through ``object.__setattr__``.)"""

    __slots__ = ("body", "cgi", "seq")
    FIELDS = __match_args__ = ("cgi", "seq", "body")

    def __init__(self, cgi: C.CGI, seq: int, body: bytes) -> None:
        self.cgi: Final = cgi
        self.seq: Final = seq
        self.body: Final = body

    def _key(self) -> tuple[C.CGI, int, bytes]:
        return (self.cgi, self.seq, self.body)


@dataclass(frozen=True, slots=True)
class UnknownCommand:
    """(server) A request whose cmd is no CGI. Answer with ``reply_error(seq, ...)``."""

    cmd: int
    seq: int


@dataclass(frozen=True, slots=True)
class Noop:
    """(server) A heartbeat. Answer with ``noop_reply(seq)``."""

    seq: int


@dataclass(frozen=True, slots=True)
class SignalKeep:
    """(server) Mars's signalling keeper (cmd 243): needs no answer."""

    seq: int


@dataclass(frozen=True, slots=True)
class Reply:
    """(client) The reply to our request ``seq``; ``cmd`` is the request's cmd and ``cgi``
    its CGI (None for a request sent with ``send_raw``)."""

    seq: int
    cmd: int
    body: bytes
    cgi: C.CGI | None


@dataclass(frozen=True, slots=True)
class NoopReply:
    """(client) The heartbeat's reply (``seq``: the noop's, 0xFFFFFFFF from us)."""

    seq: int


@dataclass(frozen=True, slots=True)
class Notify:
    """(client) cmd 24: the account has news for ``selector``; run a sync."""

    selector: int


@dataclass(frozen=True, slots=True)
class SyncPush:
    """(client) cmd 122, push with data: ``body`` is a ``NewSyncResponse`` whose items
    are the account's newest, each with its key and seq. Apply it with
    :func:`wxnet.proto.syncdriver.apply_push` (a gap means: pull with newsync)."""

    body: bytes


@dataclass(frozen=True, slots=True)
class Push:
    """(client) Another server push on seq 0 (cmd 122 push-with-data, ...)."""

    cmd: int
    body: bytes


@dataclass(frozen=True, slots=True)
class RemoteError:
    """(client) The server's protocol error (cmd 1_000_000_000); it closes the link next.
    The connection is closed once this event is returned."""

    code: int
    message: str


Event = (
    Request
    | UnknownCommand
    | Noop
    | SignalKeep
    | Reply
    | NoopReply
    | Notify
    | SyncPush
    | Push
    | RemoteError
)


_pack = HEADER.pack


def _packet(cmd: int, seq: int, body: bytes) -> bytes:
    total = HEADER_LEN + len(body)
    if total > MAX_PACKET:
        raise LocalProtocolError(f"packet of {total} bytes exceeds the {MAX_PACKET}-byte limit")
    return HEADER.pack(total, HEADER_LEN, PROTOCOL_VERSION, cmd, seq) + body


def notify_packet(selector: int) -> bytes:
    """(server) cmd 24, seq 0, body = u32 big-endian ``selector`` ("go sync").

    A server packet that depends on no state of the link: a server adapter that keeps
    no :class:`LongLinkConnection` while its link is idle sends it without one
    (:meth:`LongLinkConnection.notify` is the same with the connection's checks).

    Raises:
        LocalProtocolError: no selector bits, or more than 32.
    """
    if not 0 < selector <= _ALL_SELECTORS:
        raise LocalProtocolError(f"a notify needs selector bits, not {selector}")
    return _packet(_NOTIFY, _SEQ_PUSH, selector.to_bytes(4, "big"))


def push_packet(body: bytes) -> bytes:
    """(server) cmd 122, seq 0: push with data, ``body`` a ``NewSyncResponse`` of items
    that each carry their key and seq; like :func:`notify_packet`, it needs no
    connection (:meth:`LongLinkConnection.push_data` is the same with its checks).

    Raises:
        LocalProtocolError: a body over the packet limit (send a notify instead).
    """
    return _packet(_PUSH_DATA, _SEQ_PUSH, body)


# ---- the connection -----------------------------------------------------------------------


class LongLinkConnection:
    """One end of a long link. See the module docstring for the rules it keeps.

    Args:
        role: :data:`CLIENT` or :data:`SERVER`.
        max_packet: the largest packet accepted from the peer (framing cap).
    """

    __slots__ = (
        "_cgis",
        "_closed",
        "_decoder",
        "_in_flight",
        "_late",
        "_max_packet",
        "_next_seq",
        "role",
    )

    def __init__(self, role: Role, max_packet: int = MAX_PACKET) -> None:
        self.role = role
        #: the decoder, only while it holds part of a packet: an idle link (whose reads
        #: end on packet boundaries) keeps none (a decoder and its buffer: 120 bytes)
        self._decoder: PacketDecoder | None = None
        self._max_packet = max_packet
        #: client: our seq -> (request cmd, CGI); server: peer seq -> request cmd
        self._in_flight: dict[int, tuple[int, C.CGI | None]] = {}
        self._cgis = C.BY_CMD
        #: (client) seqs given up on (:meth:`cancel`) whose replies are dropped; made on
        #: the first cancel (an empty set costs 216 bytes on every idle server link)
        self._late: set[int] | None = None
        self._next_seq = 1
        self._closed: str | None = None

    # -- state ---------------------------------------------------------------------------
    @property
    def closed(self) -> bool:
        """True once a protocol error (sent or received) ended the link."""
        return self._closed is not None

    @property
    def in_flight(self) -> int:
        """Requests sent (client) or received (server) and not yet replied to."""
        return len(self._in_flight)

    @property
    def idle(self) -> bool:
        """Nothing in flight, nothing buffered, not closed: the connection holds no
        state a new one would not have (a server adapter may drop it until the next
        read; a client's next seq is state, so this is for the server side)."""
        return not self._in_flight and self._decoder is None and self._closed is None

    @property
    def buffered(self) -> int:
        """Bytes received but not yet part of a whole packet."""
        return 0 if self._decoder is None else self._decoder.buffered

    def _check_open(self) -> None:
        if self._closed is not None:
            raise LocalProtocolError(f"the long link is closed: {self._closed}")

    def _check_role(self, role: Role, what: str) -> None:
        if self.role is not role:
            raise LocalProtocolError(f"{what} is for the {role.value} side of a long link")

    # -- receiving -----------------------------------------------------------------------
    def receive_data(self, data: bytes) -> list[Event]:
        """Feed bytes from the peer; return the events they complete (maybe none).

        Raises:
            RemoteProtocolError: the bytes break the framing or the rules. The
                connection is closed from then on; a server sends
                :meth:`protocol_error` and closes the transport.
            LocalProtocolError: the connection was already closed.
        """
        if self._closed is not None:
            raise LocalProtocolError(f"the long link is closed: {self._closed}")
        try:
            dec = self._decoder
            if dec is None:  # a read that starts on a packet boundary: no decoder
                packets, used = split_packets(data, self._max_packet)
                if used != len(data):
                    dec = self._decoder = PacketDecoder(self._max_packet)
                    dec.feed(data[used:])
            else:
                packets = dec.receive(data)
                if not dec.buffered:
                    self._decoder = None
            if self.role is SERVER:
                return self._receive_server(packets)
            return self._receive_client(packets)
        except RemoteProtocolError as exc:
            self._closed = str(exc)
            raise

    def _receive_server(self, packets: list[tuple[int, int, bytes]]) -> list[Event]:
        # The hot path of every request the server gets: kept flat on purpose.
        in_flight, cgis = self._in_flight, self._cgis
        events: list[Event] = []
        for cmd, seq, body in packets:
            if seq >= _FIRST_RESERVED or seq == _SEQ_PUSH or cmd in (_IDENTIFY, _NOOP):
                events.append(self._server_special(cmd, seq, body))
                continue
            if seq in in_flight:
                raise RemoteProtocolError(f"seq {seq} is already in flight on this link")
            cgi = cgis.get(cmd)
            in_flight[seq] = (cmd, cgi)
            events.append(UnknownCommand(cmd, seq) if cgi is None else Request(cgi, seq, body))
        return events

    def _receive_client(self, packets: list[tuple[int, int, bytes]]) -> list[Event]:
        events: list[Event] = []
        for cmd, seq, body in packets:
            ev = self._client_packet(cmd, seq, body)
            if ev is not None:
                events.append(ev)
                if type(ev) is RemoteError:
                    self._closed = f"the server reported a protocol error: {ev.message}"
                    break
        return events

    def _server_special(self, cmd: int, seq: int, body: bytes) -> Event:
        """A packet on a reserved seq, identify or noop: check the seq rules."""
        self._check_reserved(cmd, seq)
        if cmd == _NOOP:
            return Noop(seq)  # on 0xFFFFFFFF, or an older client's ordinary seq
        if cmd == _SIGNAL_KEEP:
            return SignalKeep(seq)
        if seq in self._in_flight:
            raise RemoteProtocolError(f"seq {seq:#x} is already in flight on this link")
        cgi = self._cgis.get(cmd)
        self._in_flight[seq] = (cmd, cgi)
        return UnknownCommand(cmd, seq) if cgi is None else Request(cgi, seq, body)

    @staticmethod
    def _check_reserved(cmd: int, seq: int) -> None:
        if seq == _SEQ_PUSH:
            raise RemoteProtocolError(f"cmd {cmd} with seq 0 (seq 0 is for server pushes)")
        if cmd == _IDENTIFY and seq != _SEQ_IDENTIFY:
            raise RemoteProtocolError(f"identify must use seq {_SEQ_IDENTIFY:#x}, not {seq}")
        if seq >= _FIRST_RESERVED and _RESERVED_SEQ_CMD.get(seq, -1) != cmd:
            raise RemoteProtocolError(f"seq {seq:#x} is reserved; cmd {cmd} may not use it")

    def _client_packet(self, cmd: int, seq: int, body: bytes) -> Event | None:
        if seq == _SEQ_PUSH:
            return self._push(cmd, body)
        if cmd == _NOOP_REPLY:
            return NoopReply(seq)
        entry = self._in_flight.pop(seq, None)
        if entry is None:
            late = self._late
            if late is not None and seq in late:
                late.discard(seq)
                return None
            raise RemoteProtocolError(f"reply (cmd {cmd}) to seq {seq}, which is not in flight")
        req_cmd, cgi = entry
        if cmd != req_cmd + _REPLY:
            raise RemoteProtocolError(f"reply cmd {cmd} to a request with cmd {req_cmd}")
        return Reply(seq, req_cmd, body, cgi)

    def _push(self, cmd: int, body: bytes) -> Event:
        if cmd == _NOTIFY:
            # A notify too short for its u32 means "sync everything".
            sel = int.from_bytes(body[:4], "big") if len(body) >= 4 else _ALL_SELECTORS
            return Notify(sel)
        if cmd == _PUSH_DATA:
            return SyncPush(body)
        if cmd == _PROTOCOL_ERROR:
            resp = pb.LogoutResponse()  # any response type: only ``base`` is set
            try:
                resp.ParseFromString(body)
            except DecodeError:
                return RemoteError(int(MMRet.ERR_SYS), "undecodable protocol error")
            err = resp.base
            return RemoteError(int(err.ret), err.err_msg or f"ret {err.ret}")
        if cmd >= _REPLY:
            raise RemoteProtocolError(f"reply cmd {cmd} on seq 0 (the push seq)")
        return Push(cmd, body)

    # -- client sends --------------------------------------------------------------------
    def send_request(self, cgi: C.CGI, message: Message | bytes) -> tuple[int, bytes]:
        """(client) Encode a CGI request; return its seq (await the :class:`Reply` with it)
        and the bytes to write. identify gets seq 0xFFFFFFFE, any other CGI the next
        free ordinary seq.

        Raises:
            LocalProtocolError: a server connection, a closed one, an identify while
                another is in flight, or a body over the packet limit.
        """
        self._check_role(CLIENT, "send_request")
        self._check_open()
        body = message if isinstance(message, bytes) else message.SerializeToString()
        if cgi.cmd == _IDENTIFY:
            seq = _SEQ_IDENTIFY
            if seq in self._in_flight:
                raise LocalProtocolError("an identify is already in flight on this link")
            if self._late:
                self._late.discard(seq)
        else:
            seq = self._allocate()
        data = _packet(cgi.cmd, seq, body)
        self._in_flight[seq] = (cgi.cmd, cgi)
        return seq, data

    def send_raw(self, cmd: int, seq: int, body: bytes = b"") -> bytes:
        """(client) A request the command table does not know, on a seq the caller picks
        (tests and tools that probe a server). Its reply comes as :class:`Reply` with
        ``cgi`` None.

        Raises:
            LocalProtocolError: seq 0, a seq in flight, or cmd/seq outside 32 bits.
        """
        self._check_role(CLIENT, "send_raw")
        self._check_open()
        if not 0 < seq <= 0xFFFFFFFF or not 0 <= cmd < _REPLY:
            raise LocalProtocolError(f"cannot send cmd {cmd} with seq {seq}")
        if seq in self._in_flight:
            raise LocalProtocolError(f"seq {seq} is already in flight")
        data = _packet(cmd, seq, body)
        if cmd != _NOOP:
            self._in_flight[seq] = (cmd, self._cgis.get(cmd))
        return data

    def send_noop(self) -> bytes:
        """(client) A heartbeat: cmd 6, seq 0xFFFFFFFF; the answer is :class:`NoopReply`."""
        self._check_role(CLIENT, "send_noop")
        self._check_open()
        return _packet(_NOOP, _SEQ_NOOP, b"")

    def cancel(self, seq: int) -> None:
        """(client) Stop waiting for ``seq`` (a timeout); its reply, if it comes, is dropped."""
        if self._in_flight.pop(seq, None) is not None:
            if self._late is None:
                self._late = set()
            self._late.add(seq)

    def _allocate(self) -> int:
        seq = self._next_seq
        busy = self._in_flight
        for _ in range(len(busy) + 1):
            if seq not in busy:
                break
            seq = seq + 1 if seq + 1 < _FIRST_RESERVED else 1
        else:  # pragma: no cover - needs 4 billion requests in flight
            raise LocalProtocolError("no free seq on this link")
        if self._late:
            self._late.discard(seq)
        self._next_seq = seq + 1 if seq + 1 < _FIRST_RESERVED else 1
        return seq

    # -- server sends --------------------------------------------------------------------
    def reply(self, seq: int, body: bytes) -> bytes:
        """(server) The reply to request ``seq``: its cmd + 1_000_000_000, same seq.

        Raises:
            LocalProtocolError: no request ``seq`` waits for a reply (never received or
                already answered), the connection is closed, or the packet would exceed
                the limit (the request stays in flight: answer it with
                :meth:`reply_error`).
        """
        entry = self._in_flight.get(seq)
        if entry is None or self.role is not SERVER or self._closed is not None:
            self._check_role(SERVER, "reply")
            self._check_open()
            raise LocalProtocolError(f"no request with seq {seq} waits for a reply")
        total = HEADER_LEN + len(body)
        if total > MAX_PACKET:  # the seq stays in flight, for reply_error
            raise LocalProtocolError(f"a reply of {total} bytes exceeds the packet limit")
        in_flight = self._in_flight
        del in_flight[seq]
        if not in_flight:  # frees the table it grew (160 bytes on every idle link)
            in_flight.clear()
        return _pack(total, HEADER_LEN, PROTOCOL_VERSION, entry[0] + _REPLY, seq) + body

    def reply_error(self, seq: int, code: int, message: str) -> bytes:
        """(server) Reply to ``seq`` with a body that carries only ``base`` {ret, err_msg}."""
        return self.reply(seq, error_body(code, message))

    def noop_reply(self, seq: int) -> bytes:
        """(server) The answer to a :class:`Noop`: cmd 1_000_000_006, the noop's seq."""
        self._check_role(SERVER, "noop_reply")
        self._check_open()
        return _packet(_NOOP_REPLY, seq, b"")

    def notify(self, selector: int) -> bytes:
        """(server) cmd 24, seq 0, body = u32 big-endian ``selector`` ("go sync")."""
        self._check_role(SERVER, "notify")
        self._check_open()
        return notify_packet(selector)

    def push_data(self, body: bytes) -> bytes:
        """(server) cmd 122, seq 0: push with data, ``body`` a ``NewSyncResponse`` of items
        that each carry their key and seq (``wxnet.sync.items.newsync_response``).

        Raises:
            LocalProtocolError: a client connection, a closed one, or a body over the
                packet limit (send a notify instead).
        """
        self._check_role(SERVER, "push_data")
        self._check_open()
        return push_packet(body)

    def protocol_error(self, code: int, message: str) -> bytes:
        """(server) cmd 1_000_000_000, seq 0, ``base`` {code, message}; the link is done after it
        (close the transport once the bytes are written). Callable on a connection that
        :meth:`receive_data` just closed with a :class:`RemoteProtocolError`."""
        self._check_role(SERVER, "protocol_error")
        self._closed = self._closed or message
        self._in_flight.clear()
        return _packet(_PROTOCOL_ERROR, _SEQ_PUSH, error_body(code, message))
