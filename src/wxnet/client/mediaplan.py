"""Which media chunk to send next (S24, S25; resumable uploads): pure planning, no I/O.

Images go with ``uploadmsgimg`` in chunks, many in flight (:class:`ImagePlan`; files
with ``uploadappattach`` and videos with ``uploadvideo`` are planned the same way); each
reply carries the lowest offset the server still misses. Every attempt first sends that
chunk alone (the probe), so an upload begun by an earlier attempt or a killed process
continues from the server's offset instead of starting over; then the rest of the
image in rounds, each round skipping what a later reply showed the server has.

Voice goes with ``uploadvoice``, one chunk after the other from the server's offset
(:class:`VoicePlan`); the last chunk carries ``end_flag``, and ``cancel_after`` sends
the cancel flag after that many chunks (nothing is delivered).

The adapter (:mod:`wxnet.client.media`) reads the bytes and sends the requests.
"""

from __future__ import annotations

from dataclasses import dataclass

from wxnet.client.errors import TransportError

__all__ = ["Chunk", "ImagePlan", "UploadStalled", "VoiceChunk", "VoicePlan"]

#: Replies in a row that move the voice offset nowhere before the upload is given up.
MAX_STALLS = 3


class UploadStalled(TransportError):
    """The server's replies stopped moving the upload forward."""


@dataclass(frozen=True, slots=True)
class Chunk:
    offset: int
    length: int

    @property
    def end(self) -> int:
        return self.offset + self.length


class ImagePlan:
    """The chunks of one image of ``total`` bytes, ``chunk`` bytes each.

    ``server_has``: the lowest missing offset known from an earlier attempt. Call
    :meth:`probe` first and send it alone, then :meth:`next_round` until it returns
    nothing; report every reply with :meth:`on_reply`, and before sending a chunk of a
    round ask :meth:`needed` (an earlier reply of the round may have covered it).
    """

    def __init__(self, total: int, chunk: int, server_has: int = 0) -> None:
        if total <= 0:
            raise ValueError("an image has at least one byte")
        self.total = total
        self.size = max(1, chunk)
        self.progress = max(0, server_has)
        self.complete = False
        self.rounds = 0
        self.max_rounds = total // self.size + 3

    def _chunk(self, offset: int) -> Chunk:
        return Chunk(offset, min(self.size, self.total - offset))

    def probe(self) -> Chunk:
        """The first chunk the server misses (or the last chunk if it has them all)."""
        return self._chunk(min(self.progress, max(0, self.total - self.size)))

    def needed(self, chunk: Chunk) -> bool:
        """False when a reply showed the server already has all of ``chunk``."""
        return not (chunk.offset + self.size <= self.progress < self.total)

    def on_reply(self, start_pos: int, completed: bool) -> None:
        """A reply: ``start_pos`` is the server's lowest missing offset; ``completed``
        when it created the message (the reply carries a MsgId)."""
        self.progress = max(self.progress, start_pos)
        self.complete = self.complete or completed

    def next_round(self) -> list[Chunk]:
        """The chunks from the server's offset to the end; empty when the image is
        complete, every byte has landed, or the round budget is spent (the caller then
        gives up: the server never completed the image)."""
        if self.complete or self.rounds >= self.max_rounds:
            return []
        if self.rounds and self.progress >= self.total:
            return []  # every byte landed in an earlier round, and still no message
        self.rounds += 1
        offsets = range(self.progress, self.total, self.size)
        return [self._chunk(off) for off in offsets] or [self.probe()]


@dataclass(frozen=True, slots=True)
class VoiceChunk:
    offset: int
    length: int
    end: bool  # end_flag: the last chunk
    cancel: bool  # cancel_flag: no data, the server discards the upload


class VoicePlan:
    """The chunks of one voice clip of ``total`` bytes, one in flight at a time."""

    def __init__(
        self, total: int, chunk: int, offset: int = 0, cancel_after: int | None = None
    ) -> None:
        self.total = total
        self.size = max(1, chunk)
        self.offset = max(0, offset)
        self.cancel_after = cancel_after
        self.sent = 0
        self._stalls = 0

    def next_chunk(self) -> VoiceChunk:
        """The chunk to send now."""
        cancel = self.cancel_after is not None and self.sent >= self.cancel_after
        length = 0 if cancel else max(0, min(self.size, self.total - self.offset))
        end = self.offset + min(self.size, max(0, self.total - self.offset)) >= self.total
        return VoiceChunk(self.offset, length, end and not cancel, cancel)

    def on_reply(self, chunk: VoiceChunk, offset: int) -> None:
        """The server answered ``chunk`` without a MsgId; ``offset`` is where it wants
        the next one.

        Raises:
            UploadStalled: the reply moved nothing for :data:`MAX_STALLS` chunks, or the
                last chunk landed and still no message was created.
        """
        self.sent += 1
        if chunk.cancel:
            return
        if offset <= self.offset:
            self._stalls += 1
            if chunk.length == 0 or self._stalls >= MAX_STALLS:
                raise UploadStalled("uploadvoice: the server made no progress")
        else:
            self._stalls = 0
        self.offset = max(0, offset)  # the server's offset rules, even if it went back
        if chunk.end and self.offset >= self.total:
            raise UploadStalled("uploadvoice: ended without a message id")
