"""Gateway policy: which devices may use which apps, and when (TOML, pure).

A policy file has one ``[gate]`` table (where and how the gateway runs), a
``[groups.NAME]`` table per group (``mode = "allow-only"`` or ``"block"``, ``apps``,
optional ``also`` and ``schedule``) and ``[[devices]]`` entries that put devices, by
``mac``, ``ip`` or ``subnet``, into groups. See docs/gateway.md for the reference.

Everything here is pure: parsing takes text, time questions take ``now`` (a Unix
timestamp). Errors are :class:`PolicyError` with the line they refer to. The model is
:mod:`wxnet.gate.policymodel`, the file's parser :mod:`wxnet.gate.policyfile`; this
module is their one public name.
"""

from __future__ import annotations

from wxnet.gate.policyfile import load_policy, parse_policy, parse_window
from wxnet.gate.policymodel import (
    ALLOW_ONLY,
    BLOCK,
    MODES,
    Device,
    GateSettings,
    Group,
    Policy,
    PolicyError,
    Window,
)

__all__ = [
    "ALLOW_ONLY",
    "BLOCK",
    "MODES",
    "Device",
    "GateSettings",
    "Group",
    "Policy",
    "PolicyError",
    "Window",
    "load_policy",
    "parse_policy",
    "parse_window",
]
