"""Records for flows the kernel passed on its own, from conntrack DESTROY events.

Flows whose verdict is cached in the conntrack mark never reach userspace. When such
a connection ends, conntrack reports it (``conntrack -E -e DESTROY -o extended``) with
both directions' byte counts (``nf_conntrack_acct=1``) and its mark, which says which
app allowed it. :func:`parse_destroy` reads one event line (pure).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CtFlow", "parse_destroy"]


@dataclass(frozen=True, slots=True)
class CtFlow:
    transport: str
    client: str
    client_port: int
    server: str
    server_port: int
    bytes_up: int
    bytes_down: int
    mark: int


def _int(text: str | None) -> int:
    if text is None or not text.isdigit():
        return 0
    return int(text)


def parse_destroy(line: str) -> CtFlow | None:
    """One ``conntrack -E -o extended`` line -> :class:`CtFlow`; None for anything else
    (other event types, garbage, lines without an original direction)."""
    parts = line.split()
    if len(parts) < 4 or parts[0] != "[DESTROY]":
        return None
    transport = parts[3] if parts[1] in ("ipv4", "ipv6") else parts[1]
    directions: list[dict[str, str]] = []
    mark = 0
    for token in parts:
        key, sep, value = token.partition("=")
        if not sep:
            continue
        if key == "src":
            directions.append({})
        if key == "mark":
            mark = _int(value)
        elif directions and key in ("src", "dst", "sport", "dport", "bytes"):
            directions[-1].setdefault(key, value)
    if not directions or "src" not in directions[0] or "dst" not in directions[0]:
        return None
    orig = directions[0]
    reply = directions[1] if len(directions) > 1 else {}
    return CtFlow(
        transport=transport,
        client=orig["src"],
        client_port=_int(orig.get("sport")),
        server=orig["dst"],
        server_port=_int(orig.get("dport")),
        bytes_up=_int(orig.get("bytes")),
        bytes_down=_int(reply.get("bytes")),
        mark=mark,
    )
