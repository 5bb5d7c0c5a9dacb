"""Media chunk planning against a model of the server, over arbitrary sizes, chunk
sizes, reply orders and failed attempts: every byte lands, uploads resume from the
server's offset, voice flags sit where they belong."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wxnet.client.mediaplan import ImagePlan, UploadStalled, VoiceChunk, VoicePlan


class ImageServer:
    """Keeps the bytes it got; answers with the lowest offset it still misses."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.have = bytearray(total)
        self.got = bytearray(total)  # 1 where a byte has landed

    def put(self, offset: int, data: bytes) -> tuple[int, bool]:
        self.have[offset : offset + len(data)] = data
        self.got[offset : offset + len(data)] = b"\x01" * len(data)
        missing = self.got.find(0)
        missing = self.total if missing < 0 else missing
        return missing, missing >= self.total


def run_attempt(
    plan: ImagePlan, server: ImageServer, data: bytes, order: st.DataObject, fail_at: int | None
) -> list[int]:
    """One attempt as the adapter runs it: the probe alone, then rounds whose chunks
    land in any order. ``fail_at``: the request number that fails (ends the attempt)."""
    sent: list[int] = []

    def put(offset: int, length: int) -> None:
        if fail_at is not None and len(sent) == fail_at:
            raise ConnectionError("the link died")
        sent.append(offset)
        start, done = server.put(offset, data[offset : offset + length])
        plan.on_reply(start, done)

    probe = plan.probe()
    put(probe.offset, probe.length)
    while not plan.complete and (chunks := plan.next_round()):
        for chunk in order.draw(st.permutations(chunks)):
            if plan.needed(chunk):
                put(chunk.offset, chunk.length)
    return sent


def chunk_size(total: int) -> st.SearchStrategy[int]:
    """Up to ~40 chunks per image, so an example stays fast."""
    return st.integers(max(1, total // 40), 1500)


@given(st.integers(1, 5000), st.data())
def test_image_upload_completes_in_one_attempt(total: int, data: st.DataObject) -> None:
    size = data.draw(chunk_size(total))
    payload = bytes(i % 251 for i in range(total))
    server = ImageServer(total)
    plan = ImagePlan(total, size)
    sent = run_attempt(plan, server, payload, data, None)
    assert plan.complete and bytes(server.have) == payload
    assert len(sent) <= -(-total // size) + 1  # each chunk once, plus at most the probe


@given(st.integers(1, 5000), st.data())
def test_image_upload_resumes_from_the_server_offset(total: int, data: st.DataObject) -> None:
    """Attempts that die part-way: each next attempt starts at the offset the server
    last reported, and in the end every byte is there exactly as sent."""
    size = data.draw(chunk_size(total))
    payload = bytes((i * 7) % 256 for i in range(total))
    server = ImageServer(total)
    progress = 0
    for _attempt in range(200):
        plan = ImagePlan(total, size, progress)
        fail_at = data.draw(st.none() | st.integers(1, 4))
        try:
            sent = run_attempt(plan, server, payload, data, fail_at)
        except ConnectionError:
            sent = []
        else:
            if plan.complete:
                break
        # Resumed: the probe is the first chunk the server misses, nothing earlier.
        assert all(off >= min(progress, max(0, total - size)) for off in sent)
        progress = plan.progress
    assert plan.complete and bytes(server.have) == payload


def test_image_plan_gives_up_when_the_server_never_completes() -> None:
    plan = ImagePlan(10, 4)
    plan.probe()
    plan.on_reply(10, False)  # every byte landed, yet no message
    assert plan.next_round()  # one more round is allowed (the last chunk again)
    plan.on_reply(10, False)
    assert plan.next_round() == []


class VoiceServer:
    """Appends a chunk sent at its offset; a chunk elsewhere is ignored."""

    def __init__(self, total: int, lose_at: int | None = None) -> None:
        self.total = total
        self.buf = bytearray()
        self.lose_at = lose_at
        self.ended = False

    def put(self, chunk: VoiceChunk, data: bytes) -> int:
        if chunk.offset == len(self.buf):
            self.buf += data
        if self.lose_at is not None and len(self.buf) > self.lose_at:
            del self.buf[self.lose_at :]  # a server that lost a tail once
            self.lose_at = None
        self.ended = chunk.end and len(self.buf) >= self.total
        return len(self.buf)


@given(st.integers(1, 6000), st.integers(1, 1500), st.none() | st.integers(0, 5999))
def test_voice_streams_every_byte_with_end_flag_on_the_last(
    total: int, size: int, lose_at: int | None
) -> None:
    payload = bytes((i * 3) % 256 for i in range(total))
    server = VoiceServer(total, lose_at)
    plan = VoicePlan(total, size)
    chunks: list[VoiceChunk] = []
    for _ in range(10_000):
        chunk = plan.next_chunk()
        assert not chunk.cancel
        assert chunk.length == min(size, total - chunk.offset)
        chunks.append(chunk)
        offset = server.put(chunk, payload[chunk.offset : chunk.offset + chunk.length])
        if server.ended:
            break  # the reply carries the MsgId
        plan.on_reply(chunk, offset)
    assert bytes(server.buf) == payload
    assert chunks[-1].end and chunks[-1].offset + chunks[-1].length == total
    assert all(c.offset + c.length < total for c in chunks if not c.end)


@given(st.integers(1, 6000), st.integers(1, 1500), st.integers(0, 10))
def test_voice_cancel_after_n_chunks(total: int, size: int, n: int) -> None:
    plan = VoicePlan(total, size, cancel_after=n)
    server = VoiceServer(total)
    for _ in range(n + 1):
        chunk = plan.next_chunk()
        if chunk.cancel:
            assert chunk.length == 0 and not chunk.end
            break
        offset = server.put(chunk, b"x" * chunk.length)
        if server.ended:
            return  # the clip was shorter than n chunks: delivered before the cancel
        plan.on_reply(chunk, offset)
    assert plan.sent == n and plan.next_chunk().cancel


def test_voice_gives_up_when_the_server_stops_moving() -> None:
    plan = VoicePlan(10_000, 1000)
    with pytest.raises(UploadStalled):
        for _ in range(10):
            plan.on_reply(plan.next_chunk(), 0)
