"""``wxnet analyze``: label every flow of a packet capture, and say why (docs/analyze.md)."""

from wxnet.analyze.capture import CaptureError, CaptureReader, RawPacket
from wxnet.analyze.engine import Analyzer, FlowRecord, LonglinkPacket, Stats

__all__ = [
    "Analyzer",
    "CaptureError",
    "CaptureReader",
    "FlowRecord",
    "LonglinkPacket",
    "RawPacket",
    "Stats",
]
