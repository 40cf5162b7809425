"""From a relay's reply to the events the sender publishes (pure)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kairos.clock import to_datetime
from schemas.events import (
    Deferred,
    Delivered,
    Dispatch,
    Failed,
    RecipientRefusal,
    Scheduled,
)
from services.sender.policy import RetryPolicy, is_hard_bounce, verdict
from services.sender.relay import RelayReply


@dataclass(frozen=True)
class SendResult:
    """What one delivery attempt produces: its outcome, the retry to schedule (for a
    deferral), and the addresses that hard-bounced (to suppress)."""

    outcome: Delivered | Deferred | Failed
    retry: Scheduled | None = None
    hard_bounces: list[str] = field(default_factory=list)


def _common(d: Dispatch, now: float, traceparent: str | None = None) -> dict[str, Any]:
    """The fields every outcome of ``d`` at ``now`` shares."""
    return {
        "traceparent": traceparent or d.traceparent,
        "occurred_at": to_datetime(now),
        "account_id": d.account_id,
        "message_id": d.message_id,
        "attempt": d.attempt,
        "due_at": d.due_at,
        "batch_id": d.batch_id,
        "recipients": d.content.rcpt_to,
    }


def result_of(
    d: Dispatch,
    reply: RelayReply,
    now: float,
    policy: RetryPolicy,
    traceparent: str | None = None,
) -> SendResult:
    """Decide the outcome of relaying ``d`` with ``reply`` at ``now``; the events carry
    ``traceparent`` (the delivery's span; default: the dispatch's)."""
    common = _common(d, now, traceparent)
    bounces = [r.address for r in reply.refused if is_hard_bounce(r.code, r.enhanced)]
    kind = verdict(reply.code)
    if kind == "delivered":
        refused = [
            RecipientRefusal(
                address=r.address, smtp_code=r.code, enhanced_status=r.enhanced, text=r.text
            )
            for r in reply.refused
        ]
        outcome: Delivered | Deferred | Failed = Delivered(
            **common,
            delivered_at=to_datetime(now),
            lateness_ms=max(0, round((now - d.due_at) * 1000)),
            smtp_code=reply.code,
            smtp_text=reply.text,
            refused=refused,
        )
        return SendResult(outcome, hard_bounces=bounces)
    if kind == "failed":
        if not reply.refused and is_hard_bounce(reply.code, reply.enhanced):
            bounces = list(d.content.rcpt_to)
        outcome = Failed(
            **common,
            stage="delivery",
            reason="smtp_permanent",
            smtp_code=reply.code,
            enhanced_status=reply.enhanced,
            text=reply.text,
        )
        return SendResult(outcome, hard_bounces=bounces)
    retry_at = policy.retry_at(d.attempt, d.due_at, now)
    if retry_at is None:
        outcome = Failed(
            **common,
            stage="delivery",
            reason="retries_exhausted",
            smtp_code=reply.code,
            enhanced_status=reply.enhanced,
            text=f"gave up after attempt {d.attempt}: {reply.text}",
        )
        return SendResult(outcome)
    outcome = Deferred(
        **common,
        smtp_code=reply.code,
        enhanced_status=reply.enhanced,
        text=reply.text,
        retry_at=retry_at,
    )
    retry = Scheduled(
        occurred_at=to_datetime(now),
        account_id=d.account_id,
        message_id=d.message_id,
        due_at=retry_at,
        submitted_at=d.submitted_at,
        source="retry",
        batch_id=d.batch_id,
        attempt=d.attempt + 1,
        content=d.content,
        traceparent=common["traceparent"],
    )
    return SendResult(outcome, retry=retry)


def text_missing(d: Dispatch, now: float) -> SendResult:
    """``d``'s text is not in the schedule stream any more (its retention passed): a failure
    to record, not a message to send empty."""
    return SendResult(
        Failed(
            **_common(d, now),
            stage="delivery",
            reason="content_missing",
            text="the message text is not in the schedule stream (past its retention, or the "
            "stream was recreated)",
        )
    )
