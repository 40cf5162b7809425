"""Submit-time checks (pure), answered synchronously: account, domain, plan, suppressions.

They read the reference data as of the request; the validator runs the same kinds of checks
again at send time, against the state then."""

from __future__ import annotations

from typing import Protocol

from schemas.events import MessageContent
from schemas.reference import AccountState, DomainState, SuppressionState
from services.ingest.compose import SubmitError

#: Largest raw message accepted whatever the plan (fits the topics' 16 MiB record limit).
HARD_CAP_BYTES = 12 * 1024 * 1024


class Reference(Protocol):
    def domain(self, account_id: str, domain: str) -> DomainState | None: ...

    def suppression(self, account_id: str, address: str) -> SuppressionState | None: ...


def check_account(account: AccountState | None) -> AccountState:
    """The authenticated account, if it may submit."""
    if account is None:
        raise SubmitError("UNAUTHORIZED", "a valid API key is required", None, 401)
    if account.status != "active":
        raise SubmitError("ACCOUNT_DISABLED", "the account is disabled", None, 403)
    return account


def horizon_of(account: AccountState, scheduled: bool, limit: int) -> int:
    """How far ahead this account may schedule (``limit`` capped by its plan)."""
    if scheduled and not account.plan.scheduling_allowed:
        raise SubmitError(
            "SCHEDULING_NOT_ALLOWED",
            f"the {account.plan.name} plan does not allow scheduled sends",
            "scheduledAt",
            403,
        )
    return min(limit, account.plan.max_horizon_seconds)


def check_message(account: AccountState, content: MessageContent, ref: Reference) -> None:
    """Domain ownership and verification, recipient count, suppressions, size."""
    plan = account.plan
    if content.size > HARD_CAP_BYTES or content.size > plan.max_message_bytes:
        cap = min(HARD_CAP_BYTES, plan.max_message_bytes)
        raise SubmitError("MESSAGE_TOO_LARGE", f"{content.size} bytes; at most {cap}", None, 413)
    domain = ref.domain(account.account_id, content.from_domain)
    if domain is None:
        raise SubmitError(
            "DOMAIN_NOT_OWNED",
            f"{content.from_domain} is not a domain of this account",
            "from",
            403,
        )
    if not domain.verified:
        raise SubmitError(
            "DOMAIN_NOT_VERIFIED", f"{content.from_domain} is not verified", "from", 403
        )
    if len(content.rcpt_to) > plan.max_recipients:
        raise SubmitError(
            "TOO_MANY_RECIPIENTS",
            f"{len(content.rcpt_to)} recipients; the {plan.name} plan allows {plan.max_recipients}",
            "to",
            400,
        )
    for address in content.rcpt_to:
        s = ref.suppression(account.account_id, address)
        if s is not None:
            raise SubmitError(
                "RECIPIENT_SUPPRESSED", f"{address} is suppressed ({s.reason})", "to", 400
            )
