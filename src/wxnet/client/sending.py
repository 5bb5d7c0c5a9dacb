"""Send retries and the "network is poor" verdict (S13, S16, S23; docs/client.md,
"Sending").

Pure policies. A send is tried at most ``max_attempts`` times automatically (WeChat's
MAX_RETRY_COUNT = 1 means two attempts; wxnet defaults to three); between attempts the
client waits the back-off. After the last failure the message is marked failed: the
"red exclamation" of S23, and the user may ``resend`` it with the same ClientMsgId.
An MM error that says retrying cannot help fails the message at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

from wxnet.proto.errors import MMRet

__all__ = [
    "FATAL_CODES",
    "NetworkQuality",
    "PoorNetworkDetector",
    "SendDecision",
    "SendRetryPolicy",
    "Verdict",
]

#: Results after which a retry with the same body would get the same answer.
FATAL_CODES = frozenset(
    {
        MMRet.ERR_ARG,
        MMRet.ERR_BLOCKED,
        MMRet.ERR_NOT_FRIEND,
        MMRet.ERR_NO_RETRY,
        MMRet.ERR_TOO_LARGE,
        MMRet.ERR_NOT_FOUND,
        MMRet.ERR_NOT_ALLOWED,
        MMRet.ERR_BAD_REQUEST,
        MMRet.ERR_UNKNOWN_CMD,
        MMRet.ERR_UPLOAD_OFFSET,
    }
)


class Verdict(Enum):
    RETRY = "retry"
    FAIL = "fail"


@dataclass(frozen=True, slots=True)
class SendDecision:
    verdict: Verdict
    at: float = 0.0  # when to retry (RETRY only)
    reason: str = ""


class SendRetryPolicy:
    """Decide after a failed attempt: retry at some time, or mark the message failed."""

    def __init__(self, max_attempts: int = 3, delays: Sequence[float] = (1.0, 3.0)) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if not delays or any(d < 0 for d in delays):
            raise ValueError("delays must be a non-empty list of non-negative seconds")
        self.max_attempts = max_attempts
        self.delays = tuple(delays)

    def after_failure(
        self, attempts: int, now: float, code: int | None = None, reason: str = ""
    ) -> SendDecision:
        """``attempts``: how many attempts have been made so far (>= 1)."""
        if code is not None and code in FATAL_CODES:
            return SendDecision(Verdict.FAIL, reason=reason or f"server said no (ret {code})")
        if attempts >= self.max_attempts:
            return SendDecision(Verdict.FAIL, reason=reason or f"gave up after {attempts} attempts")
        delay = self.delays[min(attempts - 1, len(self.delays) - 1)]
        return SendDecision(Verdict.RETRY, at=now + delay, reason=reason)


class NetworkQuality(Enum):
    GOOD = "good"
    POOR = "poor"


class PoorNetworkDetector:
    """S13: after ``threshold`` consecutive failed requests or sends (default 2: "one or
    two failed sends"), the network is poor until a request succeeds.

    ``on_failure`` / ``on_success`` return the new quality when it changed, else None,
    so the caller can emit an event exactly on the edge.
    """

    def __init__(self, threshold: int = 2) -> None:
        if threshold < 1:
            raise ValueError("threshold must be at least 1")
        self.threshold = threshold
        self.consecutive_failures = 0
        self.quality = NetworkQuality.GOOD
        self.since: float | None = None

    def on_failure(self, now: float) -> NetworkQuality | None:
        self.consecutive_failures += 1
        if self.quality is NetworkQuality.GOOD and self.consecutive_failures >= self.threshold:
            self.quality = NetworkQuality.POOR
            self.since = now
            return self.quality
        return None

    def on_success(self, now: float) -> NetworkQuality | None:
        self.consecutive_failures = 0
        if self.quality is NetworkQuality.POOR:
            self.quality = NetworkQuality.GOOD
            self.since = now
            return self.quality
        return None
