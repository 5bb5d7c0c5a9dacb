"""The outbox adapter: carries out what :class:`~wxnet.client.outbox.OutboxMachine`
decides, over the links, and keeps the profile's outbox rows in step (S16, S23).

One background task (:meth:`Delivery.run`) starts every ready attempt and re-arms one
timer from the machine's :meth:`~wxnet.client.outbox.OutboxMachine.get_timer`; each
attempt runs in a task of its own. The profile row is the truth across processes: it
is committed (``sending``) before the first byte goes out, an attempt is counted in it
before it is sent, and it ends ``sent`` (with the server's MsgId) or ``failed``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from wxnet._compat import wait_for
from wxnet.client.errors import SendFailed, TransportError
from wxnet.client.events import ClientEvent, ItemReceived, SendState, SendStateChanged
from wxnet.client.inbox import UPLOADED_TYPES
from wxnet.client.links import LinkManager
from wxnet.client.media import Media
from wxnet.client.outbox import OutboxMachine
from wxnet.client.sending import SendRetryPolicy, Verdict
from wxnet.client.store import OutboxRow, ProfileStore
from wxnet.clock import Clock
from wxnet.proto import wxnet_pb2 as pb
from wxnet.proto.enums import MsgType
from wxnet.proto.errors import MMError

__all__ = ["MSG_FILE", "MSG_IMAGE", "MSG_TEXT", "MSG_VIDEO", "MSG_VOICE", "Delivery"]

MSG_TEXT = MsgType.TEXT
MSG_IMAGE = MsgType.IMAGE
MSG_VOICE = MsgType.VOICE
MSG_VIDEO = MsgType.VIDEO
MSG_FILE = MsgType.APP  # app_msg_type 6
#: MM_SCENE_SENDMSG and MM_SCENE_RETRYSENDMSG (WeChat's scene numbers of a send and a resend).
SCENE_SEND, SCENE_RETRY = 5, 6


class Delivery:
    """Sends outbox rows; :meth:`submit` returns a future for the final row."""

    def __init__(
        self,
        store: ProfileStore,
        links: LinkManager,
        media: Media,
        policy: SendRetryPolicy,
        clock: Clock,
        emit: Callable[[ClientEvent], None],
        on_sent: Callable[[], None],
    ) -> None:
        self.store = store
        self.links = links
        self.media = media
        self.machine = OutboxMachine(policy)
        self.clock = clock
        self.emit = emit
        self.on_sent = on_sent
        self.closing = False
        self._waiters: dict[str, asyncio.Future[OutboxRow]] = {}
        self._attempts: set[asyncio.Task[None]] = set()
        self._runner: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    @property
    def policy(self) -> SendRetryPolicy:
        return self.machine.policy

    def submit(self, cid: str) -> asyncio.Future[OutboxRow]:
        """Deliver the outbox row ``cid`` (already ``sending`` in the profile), unless
        it is on its way already; the future ends with its final row."""
        if self.closing:
            closed: asyncio.Future[OutboxRow] = asyncio.get_running_loop().create_future()
            closed.set_exception(SendFailed(cid, "the client is closed; it goes out next start"))
            return closed
        self.machine.submit(cid)
        fut = self._waiters.get(cid)
        if fut is None or fut.done():
            fut = self._waiters[cid] = asyncio.get_running_loop().create_future()
        self._ensure_runner()
        self._wake.set()
        return fut

    def resume(self) -> None:
        """Rows left ``sending`` (a killed process, a lost link) go out again."""
        if self.closing:
            return
        for row in self.store.outbox(("sending",)):
            self.submit(row.client_msg_id)

    def waiter(self, cid: str) -> asyncio.Future[OutboxRow] | None:
        fut = self._waiters.get(cid)
        return fut if fut is not None and not fut.done() else None

    def _ensure_runner(self) -> None:
        if self._runner is None and not self.closing:
            self._runner = asyncio.ensure_future(self.run())

    async def run(self) -> None:
        while not self.closing:
            self._wake.clear()
            for attempt in self.machine.start_ready():
                task = asyncio.ensure_future(self._attempt(attempt.client_msg_id))
                self._attempts.add(task)
                task.add_done_callback(self._attempts.discard)
            deadline = self.machine.get_timer()
            if deadline is None:
                await self._wake.wait()
                continue
            delay = deadline - self.clock.monotonic()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await wait_for(self._wake.wait(), delay)
            self.machine.handle_timer(self.clock.monotonic())

    def _finish(self, cid: str, row: OutboxRow) -> None:
        self.machine.forget(cid)
        fut = self._waiters.pop(cid, None)
        if fut is not None and not fut.done():
            fut.set_result(row)

    def _abandon(self, cid: str, exc: Exception) -> None:
        """An attempt ended in an error that is not the server's or the network's (no
        session, a bug): the waiter gets it; the row stays as it is in the profile."""
        self.machine.forget(cid)
        fut = self._waiters.pop(cid, None)
        if fut is not None and not fut.done():
            fut.set_exception(exc)

    async def _attempt(self, cid: str) -> None:
        try:
            await self._attempt_once(cid)
        except Exception as exc:
            self._abandon(cid, exc)

    async def _attempt_once(self, cid: str) -> None:
        row = self.store.outbox_row(cid)
        if row is None:
            raise SendFailed(cid, "no such message in the outbox")
        if row.state != "sending":
            self._finish(cid, row)
            return
        self.store.note_attempt(cid)
        try:
            msg_id, create_time = await self._send_once(row)
        except (MMError, TransportError) as exc:
            code = int(exc.code) if isinstance(exc, MMError) else None
            self._failed(cid, code, str(exc))
            return
        sess = self.links.session
        own = self.store.mark_sent(cid, msg_id, create_time, sess.user_name if sess else "")
        self.media.forget(cid)
        self.machine.succeeded(cid)
        self.emit(SendStateChanged(cid, SendState.SENT, msg_id=msg_id))
        if own is not None:  # the own copy of a newsendmsg (S17): shown from the ack
            self.emit(ItemReceived(own.item))
        if row.msg_type in UPLOADED_TYPES:
            self.on_sent()  # the server logs an upload for the sender: fetch it
        self._finish(cid, self._row(cid))

    def _failed(self, cid: str, code: int | None, reason: str) -> None:
        decision = self.machine.failed(cid, self.clock.monotonic(), code=code, reason=reason)
        if decision.verdict is Verdict.FAIL:
            # The code tells a refusal (the server answered no) from a network failure.
            self.store.mark_failed(cid, decision.reason, code)
            self.emit(SendStateChanged(cid, SendState.FAILED, reason=decision.reason))
            self._finish(cid, self._row(cid))
        else:
            self.emit(SendStateChanged(cid, SendState.RETRYING, reason=decision.reason))
            self._wake.set()

    def _row(self, cid: str) -> OutboxRow:
        row = self.store.outbox_row(cid)
        if row is None:
            raise SendFailed(cid, "the message left the outbox while it was sent")
        return row

    async def _send_once(self, row: OutboxRow) -> tuple[int, int]:
        if row.msg_type == MSG_IMAGE:
            return await self.media.upload_image(row)
        if row.msg_type == MSG_VOICE:
            return await self.media.upload_voice(row)
        if row.msg_type == MSG_FILE:
            return await self.media.upload_file(row)
        if row.msg_type == MSG_VIDEO:
            return await self.media.upload_video(row)
        msg = pb.MicroMsg(
            to_user=row.to_user,
            content=row.content,
            msg_type=row.msg_type,
            create_time=int(row.queued_at),
            client_msg_id=row.client_msg_id,
        )
        scene = SCENE_RETRY if row.attempts > 1 else SCENE_SEND
        resp = await self.links.request(
            "newsendmsg",
            pb.SendMsgRequest(base=self.links.base(scene), list=[msg]),
            pb.SendMsgResponse,
        )
        for r in resp.list:
            if r.client_msg_id == row.client_msg_id or len(resp.list) == 1:
                err = MMError.from_base(r, "send")
                if err is not None:
                    raise err
                return int(r.msg_id), int(r.create_time)
        raise TransportError("newsendmsg: the reply has no result for this message")

    async def close(self, grace: float) -> None:
        """Stop the runner and every attempt in flight (each row stays ``sending`` and
        goes out again on the next start); waiters are cancelled."""
        self.closing = True
        tasks = [*self._attempts, *([self._runner] if self._runner else [])]
        for t in tasks:
            t.cancel()
        if tasks:
            # asyncio.wait neither raises the tasks' errors nor swallows a cancel of
            # the caller, unlike suppress(BaseException) around an await.
            await asyncio.wait(tasks, timeout=grace)
        for fut in self._waiters.values():
            fut.cancel()
        self._waiters.clear()
