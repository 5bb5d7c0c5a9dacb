"""The bundled signature set's cache (a part of :mod:`wxnet.classify.signatures`).

Parsing the bundled TOML files (tomllib and the checks) was ~25 ms of every
``wxnet analyze`` start. The first load writes what it built, as plain values in
Python's ``marshal`` format, to ``signatures/__pycache__/`` (where Python caches
bytecode, and only when it may: not under PYTHONDONTWRITEBYTECODE); later loads use it
if it was made from exactly the same files (names and bytes, compared in full), by the
same code (size and CRC-32 of this module and of ``signatures.py``) and this marshal
version. Anything else (no cache, stale, unreadable, damaged) parses the files as
before. Files that are not the bundled set are always parsed.
"""

from __future__ import annotations

import ipaddress
import marshal
import os
import sys
import zlib
from typing import Any

from wxnet.classify import signatures
from wxnet.classify.signatures import (
    BUNDLED_DIR,
    AppSignature,
    IPNetwork,
    PayloadPattern,
    SignatureError,
    SignatureSet,
    bundled_names,
    index,
    parse,
)

__all__ = ["cache_path", "load_bundled"]

#: Bump when the cached form changes shape.
_CACHE_FORMAT = 1


def cache_path(root: str = BUNDLED_DIR) -> str | None:
    """Where the cache of the signature files in ``root`` lives (``None``: this Python
    has no cache tag, so no cache)."""
    tag = sys.implementation.cache_tag
    if tag is None:
        return None
    return os.path.join(root, "__pycache__", f"signatures.{tag}.marshal")


def load_bundled(
    root: str = BUNDLED_DIR, cache: str | None = "", write: bool | None = None
) -> SignatureSet:
    """The signature files in ``root`` (default: the bundled set), from the cache at
    ``cache`` (``""``: :func:`cache_path`; ``None``: none) when it is current, else
    parsed and checked, and then cached when ``write`` (``None``: unless Python was told
    not to write bytecode). Raises :class:`SignatureError` as :func:`load_signatures`."""
    if cache == "":
        cache = cache_path(root)
    files: list[tuple[str, bytes]] = []
    for name in bundled_names(root):
        where = os.path.join(root, name)
        try:
            with open(where, "rb") as f:
                files.append((name, f.read()))
        except OSError as exc:
            raise SignatureError(f"{where}: cannot read: {exc.strerror or exc}") from None
    key = (_CACHE_FORMAT, marshal.version, _code_digest(), tuple(files))
    if cache is not None:
        found = _read_cache(cache, key, root)
        if found is not None:
            return found
    texts = []
    for name, data in files:
        where = os.path.join(root, name)
        try:
            # Newlines as a text-mode read gives them (what load_signatures parses).
            text = data.decode("utf-8").replace("\r\n", "\n").replace("\r", "\n")
        except UnicodeDecodeError as exc:
            raise SignatureError(f"{where}: not valid TOML: {exc}") from None
        texts.append((where, text))
    sigs = parse(texts)
    if cache is not None and (not sys.dont_write_bytecode if write is None else write):
        _write_cache(cache, key, sigs)
    return sigs


def _code_digest() -> str:
    """Size and CRC-32 of the code that builds and reads the cached values (this module
    and :mod:`~wxnet.classify.signatures`): a cache made by other code is stale."""
    parts = []
    for path in (__file__, signatures.__file__):
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError:
            return ""
        parts.append(f"{len(data)}:{zlib.crc32(data):08x}")
    return " ".join(parts)


def _read_cache(cache: str, key: tuple[Any, ...], root: str) -> SignatureSet | None:
    try:
        with open(cache, "rb") as f:
            stored = marshal.loads(f.read())
        if not isinstance(stored, tuple) or len(stored) != 2 or stored[0] != key:
            return None
        apps: dict[str, AppSignature] = {}
        for name, fields in stored[1]:
            sig = _from_plain(os.path.join(root, name), fields)
            apps[sig.id] = sig
        return index(apps)
    except (OSError, EOFError, ValueError, TypeError, IndexError, SignatureError):
        return None  # missing, unreadable or damaged: parse the files


def _write_cache(cache: str, key: tuple[Any, ...], sigs: SignatureSet) -> None:
    entries = tuple((os.path.basename(s.source), _to_plain(s)) for s in sigs)
    tmp = f"{cache}.{os.getpid()}.tmp"
    try:
        os.makedirs(os.path.dirname(cache), exist_ok=True)
        with open(tmp, "wb") as f:
            f.write(marshal.dumps((key, entries)))
        os.replace(tmp, cache)  # whole or not at all, also with concurrent writers
    except OSError:  # a read-only install: every start parses, as before
        try:
            os.unlink(tmp)
        except OSError:
            pass


def _net_plain(net: IPNetwork) -> tuple[int, int, int]:
    return (net.version, int(net.network_address), net.prefixlen)


def _net(value: tuple[int, int, int]) -> IPNetwork:
    version, address, prefix = value
    if version == 4:
        return ipaddress.IPv4Network((address, prefix))
    return ipaddress.IPv6Network((address, prefix))


def _to_plain(s: AppSignature) -> tuple[Any, ...]:
    """A signature as values marshal can store (fields in constructor order, without
    ``source``; networks as (version, address, prefix length))."""
    out: list[Any] = []
    for name in AppSignature.FIELDS[:-1]:
        value = getattr(s, name)
        if name in ("ranges", "operator_ranges"):
            value = tuple(_net_plain(n) for n in value)
        elif name == "udp_payload":
            value = tuple(p._key() for p in value)
        out.append(value)
    return tuple(out)


def _from_plain(source: str, fields: tuple[Any, ...]) -> AppSignature:
    f = list(fields)
    names = AppSignature.FIELDS
    for i in (names.index("ranges"), names.index("operator_ranges")):
        f[i] = tuple(_net(n) for n in f[i])
    at = names.index("udp_payload")
    f[at] = tuple(PayloadPattern(*p) for p in f[at])
    f.append(source)
    return AppSignature(*f)
