"""The rules a message must satisfy to be sent, over the reference data (pure).

One module for both moments a message is judged: ingest refuses a submission that breaks a
rule (answering the rule's stable ``code``), and the validator re-checks each due message
against the reference data as it is then (recording the rule's ``reason`` as a ``failed``
outcome). They cannot disagree on what "verified", "suppressed" or "within plan" means,
because neither has its own copy.

Where the two moments differ, they differ on purpose and here: a suppressed recipient
refuses a submission (the sender is told now), while at send time only that recipient is
dropped and the rest still get the message.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from schemas.reference import AccountState, DomainState, Plan, SuppressionState

#: Largest raw message accepted whatever the plan (fits the topics' 16 MiB record limit).
HARD_CAP_BYTES = 12 * 1024 * 1024


class Reference(Protocol):
    """The reference data a rule reads (the reference view, or a fake)."""

    def account(self, account_id: str) -> AccountState | None: ...

    def domain(self, account_id: str, domain: str) -> DomainState | None: ...

    def suppression(self, account_id: str, address: str) -> SuppressionState | None: ...


@dataclass(frozen=True)
class Violation:
    """A broken rule: ``code`` (stable, what a submitter is answered), ``reason`` (stable, the
    send-time ``failed`` outcome's reason), a human ``text`` and the input ``field`` at fault."""

    code: str
    reason: str
    text: str
    field: str | None = None


def account_violation(account: AccountState | None, account_id: str = "") -> Violation | None:
    """The account exists and is active."""
    if account is None:
        return Violation(
            "UNAUTHORIZED", "account_unknown", f"account {account_id} does not exist".strip()
        )
    if account.status != "active":
        return Violation("ACCOUNT_DISABLED", "account_disabled", "the account is disabled")
    return None


def domain_violation(
    ref: Reference, account_id: str, domain: str, field: str = "from"
) -> Violation | None:
    """``domain`` is a domain of the account, and verified."""
    state = ref.domain(account_id, domain)
    if state is None:
        return Violation(
            "DOMAIN_NOT_OWNED",
            "domain_unverified",
            f"{domain} is not a domain of this account",
            field,
        )
    if not state.verified:
        return Violation(
            "DOMAIN_NOT_VERIFIED", "domain_unverified", f"{domain} is not verified", field
        )
    return None


def size_limit(plan: Plan) -> int:
    """The largest message ``plan`` covers (never above the hard cap)."""
    return min(HARD_CAP_BYTES, plan.max_message_bytes)


def plan_violation(plan: Plan, recipients: int, size: int) -> Violation | None:
    """The plan covers a message of ``size`` bytes to ``recipients`` recipients."""
    if size > size_limit(plan):
        return Violation(
            "MESSAGE_TOO_LARGE",
            "plan_insufficient",
            f"{size} bytes; the {plan.name} plan allows {size_limit(plan)}",
        )
    if recipients > plan.max_recipients:
        return Violation(
            "TOO_MANY_RECIPIENTS",
            "plan_insufficient",
            f"{recipients} recipients; the {plan.name} plan allows {plan.max_recipients}",
            "to",
        )
    return None


def schedule_violation(plan: Plan, ahead: float, field: str = "scheduledAt") -> Violation | None:
    """The plan allows a message scheduled ``ahead`` seconds after its submission (0 or less:
    an immediate send, always allowed)."""
    if ahead <= 0:
        return None
    if not plan.scheduling_allowed:
        return Violation(
            "SCHEDULING_NOT_ALLOWED",
            "plan_insufficient",
            f"the {plan.name} plan does not allow scheduled sends",
            field,
        )
    if ahead > plan.max_horizon_seconds:
        return Violation(
            "SCHEDULED_AT_TOO_FAR",
            "plan_insufficient",
            f"scheduled {int(ahead)}s ahead; the {plan.name} plan allows "
            f"{plan.max_horizon_seconds}s",
            field,
        )
    return None


def suppressed(ref: Reference, account_id: str, addresses: Iterable[str]) -> dict[str, str]:
    """The suppressed ones of ``addresses``, each with its suppression's reason."""
    found: dict[str, str] = {}
    for address in addresses:
        state = ref.suppression(account_id, address)
        if state is not None:
            found[address] = state.reason
    return found


def suppression_violation(found: dict[str, str]) -> Violation | None:
    """At submit time, any suppressed recipient refuses the message."""
    if not found:
        return None
    address, reason = next(iter(found.items()))
    return Violation(
        "RECIPIENT_SUPPRESSED", "recipient_suppressed", f"{address} is suppressed ({reason})", "to"
    )
