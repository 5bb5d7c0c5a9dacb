"""JSON-lines logging: one object per line on stderr.

Under systemd with stderr connected to the journal (``JOURNAL_STREAM`` names our stderr,
systemd.exec(5)), each line starts with the syslog priority (``<3>`` error ... ``<7>``
debug), which journald strips and stores as the entry's priority (``journalctl -p
warning`` then works); the JSON keeps its own timestamp for files and pipes.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import TextIO

__all__ = ["JsonFormatter", "on_journal", "setup_logging"]

#: logging level -> syslog priority (RFC 5424 section 6.2.1)
_PRIORITY = {
    logging.CRITICAL: 2,
    logging.ERROR: 3,
    logging.WARNING: 4,
    logging.INFO: 6,
    logging.DEBUG: 7,
}


class JsonFormatter(logging.Formatter):
    def __init__(self, journal: bool = False) -> None:
        super().__init__()
        self.journal = journal

    def format(self, record: logging.LogRecord) -> str:
        obj = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        extra = getattr(record, "data", None)
        if isinstance(extra, dict):
            obj.update(extra)
        if record.exc_info:
            obj["exc"] = self.formatException(record.exc_info)
        line = json.dumps(obj, ensure_ascii=False)
        if self.journal:
            level = max((lv for lv in _PRIORITY if lv <= record.levelno), default=logging.DEBUG)
            line = f"<{_PRIORITY[level]}>{line}"
        return line


def on_journal(stream: TextIO, environ: dict[str, str] | None = None) -> bool:
    """True if ``stream`` is the journal stream systemd connected (``JOURNAL_STREAM`` is
    ``DEVICE:INODE`` of it); a redirected stderr under systemd is not."""
    value = (os.environ if environ is None else environ).get("JOURNAL_STREAM", "")
    dev, sep, ino = value.partition(":")
    if not sep or not dev.isdigit() or not ino.isdigit():
        return False
    try:
        st = os.fstat(stream.fileno())
    except (AttributeError, OSError, ValueError):
        return False
    return (st.st_dev, st.st_ino) == (int(dev), int(ino))


def setup_logging(level: str = "info") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(journal=on_journal(sys.stderr)))
    root = logging.getLogger("wxnet")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
