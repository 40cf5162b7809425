"""The submission use case: the one place that decides whether mail is accepted.

Every front door (``POST /email``, SendGrid's ``/v3/mail/send``, SMTP, and the ones to come)
only reads its protocol into a :class:`Submission` (who, the messages as :class:`Draft`s, when,
batch, idempotency key) and formats the :class:`Accepted` or the :class:`SubmitError` that
:meth:`Submitter.submit` returns as its protocol's answer. The rules live here, once:

1. the account may submit (:mod:`services.reference.rules`, the validator's rules too);
2. an idempotency key is claimed: a retry of the same request is answered as the first one
   was (even after its time has passed), another request with the key is refused;
3. the plan allows scheduling, each time is in the future and within the door's and the
   plan's horizon, a batch id is a live batch of the account; a local wall time is resolved
   in its zone (the recipient's, the request's, else the account's default), and one that
   has passed follows its policy (``next_day``, ``send_now``, or ``skip``: its recipients
   are rejected with reason ``local_time_passed``, recorded as a ``failed`` outcome);
3b. a spread (``deliverWithin``, ``maxPerMinute``) moves each message's due second later,
   by its id, never earlier;
4. each message is composed under its id, checked (size, domain, recipients, suppressions)
   and scanned;
5. the messages are published together, all or nothing (one Kafka transaction), and only
   before the idempotency claim expires;
6. the claim is completed once everything is durable, released when nothing is.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Literal, Protocol

from kairos import tracing
from kairos.clock import Clock, to_datetime
from kairos.logging import get_logger
from kairos.metrics import count
from schemas.events import Failed, MessageContent, MessageEvent, Scheduled
from schemas.reference import AccountState, BatchState
from services.ingest.checks import check_account, check_message, horizon_of
from services.ingest.compose import SubmitError
from services.ingest.idempotency import MAX_KEY_LENGTH, IdempotencyLog
from services.ingest.publish import PublishError
from services.ingest.scanners import Scanning
from services.ingest.schedule import (
    LOCAL_TIME_PASSED,
    MAX_HORIZON_SECONDS,
    LocalTimePassed,
    LocalWhen,
    Requested,
    ScheduleError,
)
from services.ingest.spread import MAX_WINDOW_SECONDS, Spread
from services.reference.rules import Reference

log = get_logger("kairos.ingest")

#: A batch id is valid this long after it was created (SendGrid's rule).
BATCH_VALIDITY = timedelta(days=10)

Source = Literal["http", "smtp", "sendgrid", "resend", "mailgun"]


class Batches(Protocol):
    def batch(self, account_id: str, batch_id: str) -> BatchState | None: ...


class Lookup(Reference, Batches, Protocol):
    """The reference data a submission is judged against."""


class Publisher(Protocol):
    """Writes the events of one submission all or nothing; PublishError when it did not."""

    async def publish_many(self, events: Sequence[MessageEvent]) -> None: ...


@dataclass(frozen=True)
class Draft:
    """One message as a front door read it: its content, composed under the message id it is
    given, and the time it asks for (None: send now): an instant, or a local wall time."""

    content: Callable[[str], MessageContent]
    when: Requested | None = None


@dataclass(frozen=True)
class Submission:
    """One request: every message in it is accepted, or none is.

    ``digest`` fingerprints the request for its idempotency key: a retry with the key and the
    same digest is a replay, with another digest a mismatch. ``dry_run``: judge everything,
    publish nothing (SendGrid's sandbox mode)."""

    account: AccountState | None
    source: Source
    drafts: Sequence[Draft]
    batch_id: str | None = None
    idempotency_key: str | None = None
    digest: str = ""
    dry_run: bool = False
    #: the client's W3C trace context (HTTP ``traceparent``); else the request's, if any
    traceparent: str | None = None
    #: spread the messages' due seconds (``deliverWithin``, ``maxPerMinute``)
    spread: Spread | None = None
    #: RFC 8058 one-click unsubscribe headers on its messages (None: the account's setting)
    list_unsubscribe: bool | None = None

    @property
    def scheduled(self) -> bool:
        return self.spread is not None or any(d.when is not None for d in self.drafts)


@dataclass(frozen=True)
class Rejection:
    """Recipients of a submission that were not scheduled while the others were: their message
    ``id`` has a ``failed`` outcome (stage ``submit``) with this stable ``reason``."""

    id: str
    recipients: list[str]
    reason: str
    message: str = ""

    def json(self) -> dict[str, Any]:
        return {"id": self.id, "to": self.recipients, "reason": self.reason}


@dataclass(frozen=True)
class Accepted:
    """The messages of an accepted submission: their ids and due seconds (None: sent now), in
    the order of its drafts, without those in ``rejected`` (recipients whose local time had
    passed under ``skip``). ``replayed``: the answer to an earlier request with the key."""

    ids: list[str]
    dues: list[int | None]
    replayed: bool = False
    rejected: list[Rejection] = field(default_factory=list)
    #: the envelope recipients of each accepted message, in the order of ``ids``
    recipients: list[list[str]] = field(default_factory=list)

    def record(self) -> dict[str, Any]:
        """What the idempotency log keeps of it."""
        return {
            "ids": self.ids,
            "dues": self.dues,
            "recipients": self.recipients,
            "rejected": [
                {"id": r.id, "to": r.recipients, "reason": r.reason} for r in self.rejected
            ],
        }

    @classmethod
    def replay(cls, record: dict[str, Any]) -> Accepted:
        rejected = [Rejection(r["id"], r["to"], r["reason"]) for r in record.get("rejected", [])]
        recipients = [list(r) for r in record.get("recipients", [])]
        return cls(list(record["ids"]), list(record["dues"]), True, rejected, recipients)

    def messages(self) -> list[dict[str, Any]]:
        """Each accepted message as an answer lists it: id, recipients, due second."""
        recipients = self.recipients or [[] for _ in self.ids]
        return [
            {"id": mid, "to": to, "scheduled_at": due}
            for mid, due, to in zip(self.ids, self.dues, recipients, strict=True)
        ]


def live_batch(ref: Batches, account_id: str, batch_id: str, now: float) -> BatchState | None:
    """The account's batch ``batch_id`` if it exists and has not expired (pure)."""
    batch = ref.batch(account_id, batch_id)
    if batch is None or to_datetime(now) - batch.created_at > BATCH_VALIDITY:
        return None
    return batch


class Submitter:
    """:meth:`submit`, over the reference data, the publisher, the clock, the idempotency log
    and the scanners."""

    def __init__(
        self,
        ref: Lookup,
        publisher: Publisher,
        clock: Clock,
        idempotency: IdempotencyLog | None = None,
        scanning: Scanning | None = None,
    ) -> None:
        self.ref, self.publisher, self.clock = ref, publisher, clock
        self.idempotency, self.scanning = idempotency, scanning

    async def submit(self, submission: Submission) -> Accepted:
        """Accept every message of ``submission`` durably, or raise SubmitError (a stable
        code; status 503 for "retry later")."""
        now = self.clock.now()
        account = check_account(submission.account)
        key = submission.idempotency_key
        first_id = str(uuid.uuid4())
        if key is not None and not 1 <= len(key) <= MAX_KEY_LENGTH:
            raise SubmitError(
                "INVALID_IDEMPOTENCY_KEY", f"1 to {MAX_KEY_LENGTH} characters", "Idempotency-Key"
            )
        if key is None or self.idempotency is None:
            return await self._accept(account, submission, now, first_id, None)
        decision = await self.idempotency.claim(
            account.account_id, key, submission.digest, first_id
        )
        if decision.kind == "replay" and decision.response is not None:
            return Accepted.replay(decision.response)
        if decision.kind == "mismatch":
            raise SubmitError(
                "IDEMPOTENCY_BODY_MISMATCH",
                "this key was used with a different request",
                "Idempotency-Key",
                409,
            )
        if decision.kind != "proceed":
            raise SubmitError(
                "IDEMPOTENCY_IN_FLIGHT",
                "a request with this key is still in flight",
                "Idempotency-Key",
                409,
            )
        try:
            accepted = await self._accept(account, submission, now, first_id, decision.expires_at)
        except BaseException:
            await self.idempotency.release(account.account_id, key, first_id)
            raise
        await self.idempotency.complete(account.account_id, key, first_id, accepted.record())
        return accepted

    async def _accept(
        self,
        account: AccountState,
        submission: Submission,
        now: float,
        first_id: str,
        deadline: float | None,
    ) -> Accepted:
        """Judge, compose, check, scan and publish. ``deadline``: when the idempotency claim
        stops holding its key; past it another request may hold the key, so this one must not
        publish."""
        if not submission.drafts:
            raise SubmitError("MISSING_RECIPIENT", "nothing to send", "to")
        try:
            horizon = horizon_of(account, submission.scheduled, MAX_HORIZON_SECONDS)
            requested = [due_of(d.when, account, now, horizon) for d in submission.drafts]
        except ScheduleError as exc:
            raise SubmitError(exc.code, exc.message, exc.field) from exc
        skipped = [due for due in requested if isinstance(due, LocalTimePassed)]
        if len(skipped) == len(requested):
            first = skipped[0]
            raise SubmitError(
                first.code,
                f"{first.message}, for every recipient (ifPassed: skip); nothing was scheduled",
                first.field,
            )
        batch_id = submission.batch_id
        if batch_id is not None and live_batch(self.ref, account.account_id, batch_id, now) is None:
            raise SubmitError(
                "INVALID_BATCH_ID",
                "invalid batch id (unknown, expired, or another account's); create one with "
                "POST /v3/mail/batch",
                "batch_id",
            )
        all_ids = [first_id, *(str(uuid.uuid4()) for _ in submission.drafts[1:])]
        unsubscribe = (
            submission.list_unsubscribe
            if submission.list_unsubscribe is not None
            else bool(account.list_unsubscribe)
        )
        all_contents = [
            with_unsubscribe(d.content(mid), unsubscribe, submission.list_unsubscribe)
            for d, mid in zip(submission.drafts, all_ids, strict=True)
        ]
        for content in all_contents:
            check_message(account, content, self.ref)
        kept = [i for i, due in enumerate(requested) if not isinstance(due, LocalTimePassed)]
        ids = [all_ids[i] for i in kept]
        contents = [all_contents[i] for i in kept]
        wanted = [due for due in requested if not isinstance(due, LocalTimePassed)]
        dues = spread_dues(submission.spread, ids, wanted, now, horizon)
        rejected = [
            Rejection(all_ids[i], list(all_contents[i].rcpt_to), LOCAL_TIME_PASSED, due.message)
            for i, due in enumerate(requested)
            if isinstance(due, LocalTimePassed)
        ]
        if self.scanning is not None:
            scanned: set[bytes] = set()
            for content in contents:
                raw = content.raw()
                if raw not in scanned:
                    scanned.add(raw)
                    await self.scanning.check(raw)
        accepted = Accepted(ids, dues, False, rejected, [list(c.rcpt_to) for c in contents])
        if submission.dry_run:
            return accepted
        parent = tracing.valid(submission.traceparent or tracing.incoming.get())
        with tracing.step(
            "accept",
            parent,
            **{"kairos.source": submission.source, "kairos.messages": len(ids)},
            **{"kairos.account": account.account_id, "kairos.message_id": first_id},
        ) as traceparent:
            events: list[MessageEvent] = [
                Scheduled(
                    occurred_at=to_datetime(now),
                    account_id=account.account_id,
                    message_id=mid,
                    due_at=due if due is not None else int(now),
                    submitted_at=to_datetime(now),
                    source=submission.source,
                    batch_id=batch_id,
                    content=content,
                    traceparent=traceparent,
                )
                for mid, due, content in zip(ids, dues, contents, strict=True)
            ]
            events += [
                Failed(
                    occurred_at=to_datetime(now),
                    account_id=account.account_id,
                    message_id=r.id,
                    attempt=1,
                    due_at=int(now),
                    batch_id=batch_id,
                    recipients=r.recipients,
                    stage="submit",
                    reason=r.reason,
                    text=r.message,
                    traceparent=traceparent,
                )
                for r in rejected
            ]
            if deadline is not None and self.clock.now() >= deadline:
                raise SubmitError(
                    "IDEMPOTENCY_CLAIM_EXPIRED",
                    "the request took longer than its idempotency claim holds; retry",
                    "Idempotency-Key",
                    503,
                )
            try:
                await self.publisher.publish_many(events)
            except PublishError as exc:
                log.warning("publish failed", message_id=first_id, error=str(exc))
                raise SubmitError(
                    "BROKER_UNAVAILABLE", "could not store the message; retry", None, 503
                ) from exc
        count("ingest", "scheduled", len(ids))
        return accepted


def due_of(
    when: Requested | None, account: AccountState, now: float, horizon: int
) -> int | LocalTimePassed | None:
    """The due second a draft asks for (None: at once), judged against ``now``; a local wall
    time in its zone (else the account's default zone, else UTC). A local time passed under
    ``skip`` is returned as its :class:`LocalTimePassed`; any other bad time raises."""
    if when is None:
        return None
    if isinstance(when, LocalWhen):
        try:
            return when.in_zone(account.time_zone).check(now, horizon)
        except LocalTimePassed as skipped:
            return skipped
    return when.check(now, horizon)


def spread_dues(
    spread: Spread | None, ids: Sequence[str], dues: Sequence[int | None], now: float, horizon: int
) -> list[int | None]:
    """The due seconds after ``spread`` (pure): unchanged without one; else each message
    (a message due at once counts from ``now``) moved later by :meth:`Spread.offsets`, within
    the horizon. SubmitError ``INVALID_SPREAD`` for a window longer than a day,
    ``SCHEDULED_AT_TOO_FAR`` past the horizon."""
    if spread is None:
        return list(dues)
    base = [due if due is not None else int(now) for due in dues]
    counts: dict[int, int] = {}
    for due in base:
        counts[due] = counts.get(due, 0) + 1
    if any(spread.window(n) > MAX_WINDOW_SECONDS for n in counts.values()):
        raise SubmitError(
            "INVALID_SPREAD",
            f"maxPerMinute would spread these messages over more than {MAX_WINDOW_SECONDS} s",
            "maxPerMinute",
        )
    out: list[int | None] = [
        due + offset for due, offset in zip(base, spread.offsets(ids, base), strict=True)
    ]
    if any(due is not None and due - now > horizon for due in out):
        raise SubmitError(
            "SCHEDULED_AT_TOO_FAR", "the spread ends beyond the schedule horizon", "deliverWithin"
        )
    return out


def with_unsubscribe(
    content: MessageContent, enabled: bool, requested: bool | None
) -> MessageContent:
    """``content`` marked for RFC 8058 one-click unsubscribe headers when ``enabled`` and it has
    one recipient (a link in a message to several could unsubscribe them all at one click).
    SubmitError ``UNSUBSCRIBE_NEEDS_ONE_RECIPIENT`` when the request itself asked for it on a
    message to several; the account's setting skips those."""
    if not enabled:
        return content
    if len(content.rcpt_to) != 1:
        if requested:
            raise SubmitError(
                "UNSUBSCRIBE_NEEDS_ONE_RECIPIENT",
                "one-click unsubscribe needs one recipient per message (use one message or "
                "personalization per recipient)",
                "listUnsubscribe",
            )
        return content
    return content.model_copy(update={"list_unsubscribe": True})
