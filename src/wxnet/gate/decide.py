"""What to do with an inspected flow (pure): the attestation rule.

Payload evidence (MMTLS head, 2014 head, Host, SNI, User-Agent, paths) may *label* a
flow and may *deny* it; it never *admits* a destination, and it never changes what
another device or group may reach. An allow-only group's flow passes only when its
destination is attested for that group (:mod:`wxnet.gate.attest`): ``dns``,
``newgetdns`` or ``range``; a ``cdn`` address (reached through a CNAME to a name of no
allowed app) passes only when the flow's own SNI/Host names an allowed app.

Block groups: a flow labelled as a blocked app is reset and its destination denied
*for that device* (``x_<group>`` holds device . destination); a flow found clean is
cached for (device, destination, port) for ``pass-timeout``; a flow that sent nothing
before the peek ran out, or whose head did not fit ``peek-bytes``, is judged by its
destination alone: reset when the policy is strict, passed (never cached) when lenient.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from wxnet.gate.policy import ALLOW_ONLY, Group, Policy
from wxnet.gate.ruleset import clean_set, deny_set

__all__ = ["Decision", "VerdictLike", "decide"]


class VerdictLike(Protocol):
    """The fields of ``wxnet.classify.Verdict`` the gateway uses."""

    @property
    def app(self) -> str | None: ...
    @property
    def confirmed(self) -> bool: ...
    @property
    def spoofed(self) -> bool: ...
    @property
    def final(self) -> bool: ...
    @property
    def names(self) -> tuple[str, ...]: ...


@dataclass(frozen=True, slots=True)
class Decision:
    allow: bool
    reason: str
    teach: tuple[tuple[str, str, int], ...] = ()  # (set, key, timeout) for the nft sets
    admitted_by: str | None = None  # "dns" | "newgetdns" | "range"
    app: str | None = None  # the app the destination is admitted for
    watch_newgetdns: bool = False  # read newgetdns answers on this flow


def decide(
    policy: Policy,
    group: Group | None,
    verdict: VerdictLike,
    client: str,
    server: str,
    server_port: int,
    attests: Sequence[tuple[str, str]],
    ended: str,
    app_for_name: Callable[[str], str | None],
) -> Decision:
    """One inspected TCP flow.

    Args:
        attests: ``Attestations.lookup(group, server)``: (app, kind) pairs.
        ended: why the peek stopped: ``final`` (the verdict is final), ``budget``
            (``peek-bytes`` read, verdict not final), ``timeout`` or ``eof``.
    """
    if group is None:
        return Decision(True, "device unrestricted")
    if group.mode == ALLOW_ONLY:
        return _allow_only(policy, group, verdict, server, server_port, attests, app_for_name)
    return _block_mode(policy, group, verdict, client, server, server_port, attests, ended)


def _allow_only(
    policy: Policy,
    group: Group,
    verdict: VerdictLike,
    server: str,
    server_port: int,
    attests: Sequence[tuple[str, str]],
    app_for_name: Callable[[str], str | None],
) -> Decision:
    """An allow-only group: an attestation of an allowed app admits; a label never."""
    s = policy.settings
    allowed = group.effective_apps
    ports = {a: policy.catalog[a].tcp_ports for a in allowed if a in policy.catalog}
    usable = [(a, k) for a, k in attests if a in allowed and server_port in ports.get(a, ())]
    if verdict.app is not None and verdict.app not in allowed and verdict.confirmed:
        return Decision(False, f"{verdict.app} is not allowed in group {group.name}")
    admitting = [(a, k) for a, k in usable if k != "cdn"]
    if admitting:
        app, kind = admitting[0]
        info = policy.catalog[app]
        watch = server_port in info.newgetdns_ports and bool(info.newgetdns_paths)
        return Decision(
            True,
            f"{server} admitted for {app} in group {group.name} ({kind})",
            admitted_by=kind,
            app=app,
            watch_newgetdns=watch,
        )
    cdn = [a for a, k in usable if k == "cdn"]
    if cdn:
        named = [n for n in verdict.names if app_for_name(n) in allowed]
        if named and (not verdict.spoofed or s.spoof == "lenient"):
            return Decision(
                True,
                f"{server} came from a CNAME to a shared name; {named[0]!r} is allowed",
                admitted_by="dns",
                app=app_for_name(named[0]),
            )
        return Decision(
            False,
            f"{server} is a shared (CDN) address: only flows naming an allowed app pass",
        )
    what = f" (payload says {verdict.app})" if verdict.app else ""
    return Decision(
        False,
        f"{server} is not admitted for group {group.name}{what}: no DNS answer, "
        "newgetdns answer or operator range attests it",
    )


def _block_mode(
    policy: Policy,
    group: Group,
    verdict: VerdictLike,
    client: str,
    server: str,
    server_port: int,
    attests: Sequence[tuple[str, str]],
    ended: str,
) -> Decision:
    """A block group: a blocked app's range or verdict blocks; the rest passes."""
    s = policy.settings
    allowed = group.effective_apps
    blocked = set(allowed)
    for a in blocked:
        if any(k == "range" for app, k in attests if app == a):
            return Decision(False, f"{server} is in {a}'s operator ranges (blocked)")
    if verdict.app is not None and verdict.app in blocked:
        teach: tuple[tuple[str, str, int], ...] = ()
        if verdict.confirmed or verdict.spoofed:  # this device's own flow said so
            teach = ((deny_set(group.name), f"{client} . {server}", s.min_set_timeout),)
        return Decision(False, f"{verdict.app} is blocked in group {group.name}", teach)
    if ended in ("timeout", "eof", "budget") and not verdict.final:
        what = "nothing within peek-timeout" if ended != "budget" else "no verdict in peek-bytes"
        if s.spoof == "strict":
            return Decision(False, f"{what}: unknown destination reset (strict)")
        return Decision(True, f"{what}: passed, not cached (lenient)")
    clean = ((clean_set(group.name), f"{client} . {server} . {server_port}", s.pass_timeout),)
    return Decision(True, "not a blocked application", clean)
