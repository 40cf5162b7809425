"""Send-time re-validation: each of the seeds' cases, and the plan checks."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

import pytest

from schemas.events import Due, MessageContent
from services.validator.decide import (
    AccountFacts,
    Approved,
    Rejected,
    decide,
)

T = 1_800_000_000
PRO = AccountFacts(
    active=True,
    max_recipients=50,
    max_message_bytes=10_000_000,
    max_horizon_seconds=30 * 86400,
    scheduling_allowed=True,
)


@dataclass
class Ref:
    facts: dict[str, AccountFacts] = field(default_factory=lambda: {"acc": PRO})
    verified: set[tuple[str, str]] = field(default_factory=lambda: {("acc", "x.test")})
    suppressed: dict[tuple[str, str], str] = field(default_factory=dict)

    def account_facts(self, account_id: str) -> AccountFacts | None:
        return self.facts.get(account_id)

    def domain_verified(self, account_id: str, domain: str) -> bool:
        return (account_id, domain) in self.verified

    def suppression_reason(self, account_id: str, address: str) -> str | None:
        return self.suppressed.get((account_id, address))


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
    out = decide(due(), Ref(facts={"acc": replace(PRO, active=False)}))
    assert isinstance(out, Rejected) and out.reason == "account_disabled"
    out = decide(due(), Ref(facts={}))
    assert isinstance(out, Rejected) and out.reason == "account_unknown"


@pytest.mark.parametrize(
    ("facts", "message"),
    [
        (replace(PRO, max_recipients=1), due(("b@y.test", "c@y.test"))),
        (replace(PRO, max_message_bytes=99), due(size=100)),
        (replace(PRO, max_horizon_seconds=3599), due(ahead=3600)),
        (replace(PRO, scheduling_allowed=False), due(ahead=3600)),
    ],
    ids=["recipients", "size", "horizon", "scheduling"],
)
def test_downgraded_plan_no_longer_covers_the_message(facts: AccountFacts, message: Due) -> None:
    out = decide(message, Ref(facts={"acc": facts}))
    assert isinstance(out, Rejected) and out.reason == "plan_insufficient"


def test_a_retry_is_not_rejected_for_its_own_backoff() -> None:
    facts = replace(PRO, max_horizon_seconds=60, scheduling_allowed=False)
    assert isinstance(decide(due(ahead=7200, attempt=3), Ref(facts={"acc": facts})), Approved)
    assert isinstance(decide(due(ahead=0), Ref(facts={"acc": facts})), Approved)
