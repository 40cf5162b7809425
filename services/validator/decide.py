"""Send-time re-validation (pure): is a due message still allowed to go out?

The seeds require the same checks as at submit time, against the state *now*: the sending
domain is still verified, no recipient is suppressed, the account is active and its current
plan still covers what the message needs. A failure is a recorded outcome, never a delivery.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from schemas.events import Due

#: Stable reason codes of a send-time rejection (the ``reason`` of a ``failed`` outcome).
ACCOUNT_UNKNOWN = "account_unknown"
ACCOUNT_DISABLED = "account_disabled"
DOMAIN_UNVERIFIED = "domain_unverified"
RECIPIENT_SUPPRESSED = "recipient_suppressed"
PLAN_INSUFFICIENT = "plan_insufficient"


@dataclass(frozen=True)
class AccountFacts:
    """What send-time validation needs to know about an account."""

    active: bool
    max_recipients: int
    max_message_bytes: int
    max_horizon_seconds: int
    scheduling_allowed: bool


class ReferenceLookup(Protocol):
    """The reference data as of now (accounts, domains, suppressions)."""

    def account_facts(self, account_id: str) -> AccountFacts | None: ...

    def domain_verified(self, account_id: str, domain: str) -> bool: ...

    def suppression_reason(self, account_id: str, address: str) -> str | None: ...


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


def decide(due: Due, ref: ReferenceLookup) -> Approved | Rejected:
    """Re-check ``due`` against the reference data as it is now."""
    facts = ref.account_facts(due.account_id)
    if facts is None:
        return Rejected(ACCOUNT_UNKNOWN, f"account {due.account_id} does not exist")
    if not facts.active:
        return Rejected(ACCOUNT_DISABLED, "the account is disabled")
    domain = due.content.from_domain
    if not ref.domain_verified(due.account_id, domain):
        return Rejected(DOMAIN_UNVERIFIED, f"{domain} is not a verified domain of the account")
    needs = len(due.content.rcpt_to)
    if needs > facts.max_recipients:
        return Rejected(
            PLAN_INSUFFICIENT, f"{needs} recipients; the plan allows {facts.max_recipients}"
        )
    if due.content.size > facts.max_message_bytes:
        return Rejected(
            PLAN_INSUFFICIENT,
            f"{due.content.size} bytes; the plan allows {facts.max_message_bytes}",
        )
    if due.attempt == 1:
        horizon = due.due_at - int(due.submitted_at.timestamp())
        if horizon > 0 and not facts.scheduling_allowed:
            return Rejected(PLAN_INSUFFICIENT, "the plan no longer allows scheduled sends")
        if horizon > facts.max_horizon_seconds:
            return Rejected(
                PLAN_INSUFFICIENT,
                f"scheduled {horizon}s ahead; the plan allows {facts.max_horizon_seconds}s",
            )
    keep: list[str] = []
    dropped: list[str] = []
    for address in due.content.rcpt_to:
        (dropped if ref.suppression_reason(due.account_id, address) else keep).append(address)
    if not keep:
        return Rejected(
            RECIPIENT_SUPPRESSED, f"every recipient is suppressed: {', '.join(dropped)}"
        )
    return Approved(keep, dropped)
