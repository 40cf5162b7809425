"""Send-time re-validation: each of the seeds' cases, and the plan checks."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest

from schemas.events import Due, MessageContent
from schemas.reference import AccountState, DomainState, Plan, SuppressionState
from services.validator.decide import Approved, Rejected, decide

T = 1_800_000_000
EPOCH = datetime.fromtimestamp(T - 86400, UTC)
PRO = Plan(
    name="pro",
    max_recipients=50,
    max_message_bytes=10_000_000,
    max_horizon_seconds=30 * 86400,
    scheduling_allowed=True,
)


def account(plan: Plan = PRO, status: str = "active") -> AccountState:
    return AccountState(
        occurred_at=EPOCH,
        account_id="acc",
        name="acc",
        status=status,  # type: ignore[arg-type]
        plan=plan,
        created_at=EPOCH,
    )


@dataclass
class Ref:
    """Reference data as the rules read it: accounts, verified domains, suppressions."""

    accounts: dict[str, AccountState] = field(default_factory=lambda: {"acc": account()})
    verified: set[tuple[str, str]] = field(default_factory=lambda: {("acc", "x.test")})
    suppressed: dict[tuple[str, str], str] = field(default_factory=dict)

    def account(self, account_id: str) -> AccountState | None:
        return self.accounts.get(account_id)

    def domain(self, account_id: str, domain: str) -> DomainState | None:
        if (account_id, domain) not in self.verified:
            return None
        return DomainState(
            occurred_at=EPOCH, account_id=account_id, domain=domain, verified=True,
            changed_at=EPOCH,
        )  # fmt: skip

    def suppression(self, account_id: str, address: str) -> SuppressionState | None:
        reason: Any = self.suppressed.get((account_id, address))
        if reason is None:
            return None
        return SuppressionState(
            occurred_at=EPOCH, account_id=account_id, address=address, reason=reason,
            added_at=EPOCH,
        )  # fmt: skip


def due(
    rcpt: tuple[str, ...] = ("b@y.test",), size: int = 100, ahead: int = 3600, attempt: int = 1
) -> Due:
    sub = datetime.fromtimestamp(T - ahead, UTC)
    now = datetime.fromtimestamp(T, UTC)
    return Due(
        occurred_at=now,
        account_id="acc",
        message_id="m",
        due_at=T,
        attempt=attempt,
        submitted_at=sub,
        emitted_at=now,
        lateness_ms=0,
        content=MessageContent(
            mail_from="a@x.test", rcpt_to=list(rcpt), from_domain="x.test", mime="x", size=size
        ),
    )


def test_a_message_still_allowed_is_approved() -> None:
    assert decide(due(), Ref()) == Approved(["b@y.test"], [])


def test_domain_unverified_after_scheduling() -> None:
    out = decide(due(), Ref(verified=set()))
    assert isinstance(out, Rejected) and out.reason == "domain_unverified"


def test_recipient_suppressed_after_scheduling() -> None:
    ref = Ref(suppressed={("acc", "b@y.test"): "hard_bounce"})
    out = decide(due(), ref)
    assert isinstance(out, Rejected) and out.reason == "recipient_suppressed"
    partial = decide(due(("b@y.test", "c@y.test")), ref)
    assert partial == Approved(["c@y.test"], ["b@y.test"])


def test_account_disabled_or_unknown() -> None:
    out = decide(due(), Ref(accounts={"acc": account(status="disabled")}))
    assert isinstance(out, Rejected) and out.reason == "account_disabled"
    out = decide(due(), Ref(accounts={}))
    assert isinstance(out, Rejected) and out.reason == "account_unknown"


@pytest.mark.parametrize(
    ("plan", "message"),
    [
        (PRO.model_copy(update={"max_recipients": 1}), due(("b@y.test", "c@y.test"))),
        (PRO.model_copy(update={"max_message_bytes": 99}), due(size=100)),
        (PRO.model_copy(update={"max_horizon_seconds": 3599}), due(ahead=3600)),
        (PRO.model_copy(update={"scheduling_allowed": False}), due(ahead=3600)),
    ],
    ids=["recipients", "size", "horizon", "scheduling"],
)
def test_downgraded_plan_no_longer_covers_the_message(plan: Plan, message: Due) -> None:
    out = decide(message, Ref(accounts={"acc": account(plan)}))
    assert isinstance(out, Rejected) and out.reason == "plan_insufficient"


def test_a_retry_is_not_rejected_for_its_own_backoff() -> None:
    plan = PRO.model_copy(update={"max_horizon_seconds": 60, "scheduling_allowed": False})
    ref = Ref(accounts={"acc": account(plan)})
    assert isinstance(decide(due(ahead=7200, attempt=3), ref), Approved)
    assert isinstance(decide(due(ahead=0), ref), Approved)
