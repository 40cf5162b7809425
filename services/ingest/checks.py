"""Submit-time checks, answered synchronously: the rules of :mod:`services.reference.rules`
(the validator re-checks the same rules at send time) as ingest's refusals, each with its
stable code and HTTP status."""

from __future__ import annotations

from schemas.events import MessageContent
from schemas.reference import AccountState
from services.ingest.compose import SubmitError
from services.reference.rules import (
    HARD_CAP_BYTES,
    Reference,
    Violation,
    account_violation,
    domain_violation,
    plan_violation,
    schedule_violation,
    suppressed,
    suppression_violation,
)

__all__ = ["HARD_CAP_BYTES", "check_account", "check_domain", "check_message", "horizon_of"]

#: The HTTP status a broken rule is answered with (400 for any other).
STATUS = {
    "UNAUTHORIZED": 401,
    "ACCOUNT_DISABLED": 403,
    "DOMAIN_NOT_OWNED": 403,
    "DOMAIN_NOT_VERIFIED": 403,
    "SCHEDULING_NOT_ALLOWED": 403,
    "MESSAGE_TOO_LARGE": 413,
}


def refuse(violation: Violation | None) -> None:
    """Raise the SubmitError of a broken rule (nothing when ``violation`` is None)."""
    if violation is not None:
        raise SubmitError(
            violation.code, violation.text, violation.field, STATUS.get(violation.code, 400)
        )


def check_account(account: AccountState | None) -> AccountState:
    """The authenticated account, if it may submit (None: no valid API key)."""
    if account is None:
        raise SubmitError("UNAUTHORIZED", "a valid API key is required", None, 401)
    refuse(account_violation(account))
    return account


def horizon_of(
    account: AccountState, scheduled: bool, limit: int, field: str = "scheduledAt"
) -> int:
    """How far ahead this account may schedule: ``limit`` (the front door's) capped by its plan;
    SCHEDULING_NOT_ALLOWED for a scheduled submission on a plan without scheduling."""
    if scheduled:
        refuse(schedule_violation(account.plan, 1, field))
    return min(limit, account.plan.max_horizon_seconds)


def check_domain(ref: Reference, account: AccountState, domain: str, field: str = "from") -> None:
    """``domain`` is a verified domain of ``account``."""
    refuse(domain_violation(ref, account.account_id, domain, field))


def check_message(account: AccountState, content: MessageContent, ref: Reference) -> None:
    """Size and recipients within plan, the From domain owned and verified, no recipient
    suppressed."""
    refuse(plan_violation(account.plan, 0, content.size))
    check_domain(ref, account, content.from_domain)
    refuse(plan_violation(account.plan, len(content.rcpt_to), 0))
    refuse(suppression_violation(suppressed(ref, account.account_id, content.rcpt_to)))
