"""What the gateway needs to know about each application: names, ports, dependencies.

The signatures themselves belong to :mod:`wxnet.classify`; this module is the seam
that turns its ``AppSignature`` objects into the small, frozen :class:`AppInfo` the
policy and the ruleset generator work with, so that neither depends on the
classifier's internal field layout.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["DEFAULT_TCP_PORTS", "AppInfo", "app_catalog", "expand_dependencies"]

#: Ports assumed for an app whose signature declares none (web-only checks such as the
#: Android connectivity probe on ``http://connectivitycheck.gstatic.com/generate_204``).
DEFAULT_TCP_PORTS = (80, 443)


@dataclass(frozen=True, slots=True)
class AppInfo:
    """One application as the gateway sees it.

    ``tcp_ports``/``udp_ports`` are the ports the app's servers listen on (allow-only
    opens exactly these); ``dependencies`` are other app ids it needs to work.
    """

    id: str
    label: str
    tcp_ports: tuple[int, ...] = ()
    udp_ports: tuple[int, ...] = ()
    dependencies: tuple[str, ...] = ()
    reason: str = ""
    #: ranges the app's operator owns (its own servers): admitted for allowing groups
    operator_ranges: tuple[str, ...] = ()
    #: where the app's HTTP-DNS (newgetdns) is served: the gateway reads those answers
    newgetdns_ports: tuple[int, ...] = ()
    newgetdns_paths: tuple[str, ...] = ()


def _ints(value: Any) -> tuple[int, ...]:
    out: list[int] = []
    if isinstance(value, int):
        return (value,)
    if isinstance(value, Iterable) and not isinstance(value, (str, bytes)):
        for item in value:
            if isinstance(item, int):
                out.append(item)
            elif isinstance(item, str) and item.isdigit():
                out.append(int(item))
    return tuple(sorted(set(out)))


def _strs(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, Iterable) and not isinstance(value, bytes):
        return tuple(str(v) for v in value)
    return ()


def _ports(sig: Any) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Read TCP and UDP ports from a signature, whichever spelling it uses."""
    tcp = _ints(getattr(sig, "tcp_ports", ()))
    udp = _ints(getattr(sig, "udp_ports", ()))
    ports = getattr(sig, "ports", None)
    if isinstance(ports, Mapping):
        tcp = tuple(sorted(set(tcp) | set(_ints(ports.get("tcp", ())))))
        udp = tuple(sorted(set(udp) | set(_ints(ports.get("udp", ())))))
    elif ports is not None:
        tcp = tuple(sorted(set(tcp) | set(_ints(ports))))
    return tcp, udp


def app_catalog(signatures: Mapping[str, Any]) -> dict[str, AppInfo]:
    """Build the catalogue from ``Classifier.apps()`` (id -> AppSignature)."""
    out: dict[str, AppInfo] = {}
    for app_id, sig in signatures.items():
        tcp, udp = _ports(sig)
        if not tcp and not udp:
            tcp = DEFAULT_TCP_PORTS
        label = getattr(sig, "label", None) or getattr(sig, "name", None) or app_id
        out[app_id] = AppInfo(
            id=app_id,
            label=str(label),
            tcp_ports=tcp,
            udp_ports=udp,
            dependencies=_strs(getattr(sig, "dependencies", ())),
            reason=str(getattr(sig, "reason", "") or ""),
            operator_ranges=tuple(str(n) for n in getattr(sig, "operator_ranges", ())),
            newgetdns_ports=_ints(getattr(sig, "newgetdns_ports", ())),
            newgetdns_paths=_strs(getattr(sig, "newgetdns_paths", ())),
        )
    return out


def expand_dependencies(apps: Iterable[str], catalog: Mapping[str, AppInfo]) -> tuple[str, ...]:
    """The apps plus everything they (transitively) depend on, sorted.

    Unknown ids are kept (the policy validator reports them)."""
    seen: set[str] = set()
    todo = list(apps)
    while todo:
        app = todo.pop()
        if app in seen:
            continue
        seen.add(app)
        info = catalog.get(app)
        if info is not None:
            todo.extend(info.dependencies)
    return tuple(sorted(seen))
