"""Send-time re-validation (pure): is a due message still allowed to go out?

The seeds require the same checks as at submit time, against the state *now*: the sending
domain is still verified, no recipient is suppressed, the account is active and its current
plan still covers what the message needs. A failure is a recorded outcome, never a delivery.
"""

from __future__ import annotations

from dataclasses import dataclass

from schemas.events import Due
from services.reference.rules import (
    Reference,
    account_violation,
    domain_violation,
    plan_violation,
    schedule_violation,
    suppressed,
)


@dataclass(frozen=True)
class Approved:
    """Send it, to these recipients (suppressed ones removed)."""

    recipients: list[str]
    dropped: list[str]


@dataclass(frozen=True)
class Rejected:
    """Do not send it: a stable ``reason`` and a human ``text``."""

    reason: str
    text: str


def decide(due: Due, ref: Reference) -> Approved | Rejected:
    """Re-check ``due`` against the reference data as it is now, by the rules ingest applied
    at submit time (:mod:`services.reference.rules`). The schedule is judged on a first
    attempt only: a retry is late by its own backoff, not by the sender's choice."""
    account = ref.account(due.account_id)
    content = due.content
    violation = account_violation(account, due.account_id)
    if violation is None and account is not None:
        ahead = due.due_at - int(due.submitted_at.timestamp()) if due.attempt == 1 else 0
        violation = (
            domain_violation(ref, due.account_id, content.from_domain)
            or plan_violation(account.plan, len(content.rcpt_to), content.size)
            or schedule_violation(account.plan, ahead)
        )
    if violation is not None:
        return Rejected(violation.reason, violation.text)
    dropped = suppressed(ref, due.account_id, content.rcpt_to)
    keep = [address for address in content.rcpt_to if address not in dropped]
    if not keep:
        return Rejected(
            "recipient_suppressed", f"every recipient is suppressed: {', '.join(dropped)}"
        )
    return Approved(keep, list(dropped))
