from __future__ import annotations

import gzip
import io

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wxnet.analyze import CaptureError, CaptureReader, RawPacket
from wxnet.analyze import synth as S

FRAME = S.ether(S.ipv4("10.0.0.1", "10.0.0.2", 17, S.udp(1, 2, b"hi")))


def read(data: bytes) -> list[RawPacket]:
    return list(CaptureReader(io.BytesIO(data)))


@pytest.mark.parametrize("nano", [False, True])
@pytest.mark.parametrize("big", [False, True])
def test_pcap_both_byte_orders_and_resolutions(nano: bool, big: bool) -> None:
    data = S.pcap_header(1, nano, big) + b"".join(
        S.pcap_record(1000.25 + i, FRAME, nano, big) for i in range(3)
    )
    pkts = read(data)
    assert [p[0] for p in pkts] == [1000.25, 1001.25, 1002.25]
    assert all(p[1:] == (1, FRAME, len(FRAME)) for p in pkts)


def test_gzip_pcap() -> None:
    data = gzip.compress(S.pcap_header() + S.pcap_record(5.0, FRAME))
    reader = CaptureReader(io.BytesIO(data))
    assert [p[2] for p in reader] == [FRAME] and reader.compressed


@pytest.mark.parametrize(("resol", "ticks"), [(None, 1_000_000), (9, 1_000_000_000)])
def test_pcapng(resol: int | None, ticks: int) -> None:
    data = (
        S.pcapng_header(1, resol)
        + S.pcapng_packet(12.5, FRAME, ticks)
        + S.pcapng_packet(13.0, FRAME[:-1], ticks)
    )
    pkts = read(data)
    assert [(p[0], p[2]) for p in pkts] == [(12.5, FRAME), (13.0, FRAME[:-1])]


def test_truncated_pcap_reports_offset_after_good_packets() -> None:
    good = S.pcap_header() + S.pcap_record(1.0, FRAME)
    cut = good + S.pcap_record(2.0, FRAME)[:-5]
    seen: list[RawPacket] = []
    with pytest.raises(CaptureError) as info:
        for p in CaptureReader(io.BytesIO(cut)):
            seen.append(p)
    assert len(seen) == 1 and info.value.offset == len(good)
    assert "truncated record" in str(info.value)


def test_truncated_record_header_and_file_header() -> None:
    with pytest.raises(CaptureError, match="truncated record header"):
        read(S.pcap_header() + b"\0\0\0")
    with pytest.raises(CaptureError, match="truncated pcap file header"):
        read(S.pcap_header()[:10])
    with pytest.raises(CaptureError, match="empty file"):
        read(b"")
    with pytest.raises(CaptureError, match="unknown file magic"):
        read(b"GIF89a...")


def test_corrupt_length_is_caught() -> None:
    bad = S.pcap_header() + b"\0" * 8 + (1 << 30).to_bytes(4, "little") + b"\0" * 4
    with pytest.raises(CaptureError, match="exceeds") as info:
        read(bad)
    assert info.value.offset == 24


def test_corrupt_pcapng_block() -> None:
    head = S.pcapng_header()
    block = S.pcapng_packet(1.0, FRAME)
    broken = block[:-4] + b"\x01\x02\x03\x04"
    with pytest.raises(CaptureError, match="trailing length") as info:
        read(head + block + broken)
    assert info.value.offset == len(head) + len(block)
    with pytest.raises(CaptureError, match="truncated block"):
        read(head + block[:-8])


def test_cut_gzip_stream() -> None:
    data = gzip.compress(S.pcap_header() + b"".join(S.pcap_record(i, FRAME) for i in range(50)))
    with pytest.raises(CaptureError):
        read(data[: len(data) // 2])


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300), st.sampled_from([S.pcap_header(), S.pcapng_header(), b""]))
def test_garbage_raises_capture_error_or_reads(noise: bytes, head: bytes) -> None:
    try:
        for _ in CaptureReader(io.BytesIO(head + noise)):
            pass
    except CaptureError:
        pass
