"""What the sender does with a relay's reply (pure): deliver, retry later, or fail for good,
and which refusals mean the mailbox does not exist."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

#: Enhanced status codes meaning the address does not exist or cannot receive mail
#: (RFC 3463 / RFC 7505): they turn into a ``hard_bounce`` suppression.
HARD_BOUNCE_STATUSES = frozenset({"5.1.1", "5.1.2", "5.1.3", "5.1.6", "5.1.10"})


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff for transient failures: ``base * 2**(attempt-1)`` seconds, capped at
    ``cap``, until ``max_attempts`` or ``max_age`` seconds after the due second."""

    base: float = 60.0
    cap: float = 3600.0
    max_attempts: int = 8
    max_age: float = 72 * 3600.0

    def retry_at(self, attempt: int, due_at: int, now: float) -> int | None:
        """The unix second of the next attempt after ``attempt`` failed transiently at ``now``,
        or None when retries are exhausted."""
        if attempt >= self.max_attempts:
            return None
        delay = min(self.cap, self.base * 2 ** (attempt - 1))
        at = int(now + delay) + 1
        if at - due_at > self.max_age:
            return None
        return at


Verdict = Literal["delivered", "deferred", "failed"]


def verdict(code: int) -> Verdict:
    """2xx delivered; 5xx failed for good; 4xx (and anything else) deferred."""
    if 200 <= code < 300:
        return "delivered"
    if 500 <= code < 600:
        return "failed"
    return "deferred"


def is_hard_bounce(code: int, enhanced: str | None) -> bool:
    """A permanent refusal meaning the mailbox does not exist."""
    return 500 <= code < 600 and enhanced in HARD_BOUNCE_STATUSES
