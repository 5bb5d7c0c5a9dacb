"""What to do with an inspected flow, given its group and the classifier's verdict (pure)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from wxnet.gate.policy import ALLOW_ONLY, Group

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


@dataclass(frozen=True, slots=True)
class Decision:
    allow: bool
    cache: str | None  # set to add the server address to: an app id, "pass", or None
    reason: str


def decide(group: Group | None, verdict: VerdictLike, spoof: str = "strict") -> Decision:
    """Allow or reset one inspected TCP flow, and whether to teach the datapath.

    Allow-only: the app must be one the group allows and confirmed by payload or DNS
    (address ranges alone never allow); a spoofed claim is reset in strict mode and
    passed (never cached) in lenient mode. Block: a flow labelled as a blocked app is
    reset, spoofed or not; anything else passes and its address is cached as clean
    when the verdict is final and confirmed-or-unknown.
    """
    app = verdict.app
    if group is None:
        return Decision(True, None, "device unrestricted")
    if group.mode == ALLOW_ONLY:
        if app is None or app not in group.effective_apps:
            what = app or "unknown application"
            return Decision(False, None, f"{what} is not allowed in group {group.name}")
        if verdict.spoofed:  # the classifier marks these unconfirmed too
            if spoof == "strict":
                return Decision(False, None, f"claims {app} but goes to an address not its own")
            return Decision(True, None, f"claims {app} to a foreign address (lenient: passed)")
        if not verdict.confirmed:
            return Decision(False, None, f"{app} not confirmed (address range or port only)")
        return Decision(True, app, f"{app} allowed in group {group.name}")
    if app is not None and app in group.effective_apps:
        cache = app if verdict.confirmed and not verdict.spoofed else None
        return Decision(False, cache, f"{app} is blocked in group {group.name}")
    clean = verdict.final and not verdict.spoofed
    return Decision(True, "pass" if clean else None, "not a blocked application")
