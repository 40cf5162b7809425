"""The submission core, through each front door in-process (FastAPI's TestClient, the SMTP
handler called directly; no broker): the same broken rule is the same stable code whatever
door a message came in by, and nothing is published; the core itself is all or nothing and
answers an idempotent retry as it answered the first request."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import orjson
import pytest
from aiosmtpd.smtp import Envelope, Session
from fastapi.testclient import TestClient

from kairos.clock import FakeClock, to_datetime
from schemas.events import Scheduled
from services.ingest.compose import EmailRequest, SubmitError, compose
from services.ingest.schedule import When
from services.ingest.smtp import SubmissionHandler
from services.ingest.submit import Draft, Submission
from tests.unit.ingest.fakes import ACCOUNT, API_KEY, Ingest, batch, ingest

NOW = 1_800_000_000.0
AUTH = {"Authorization": f"Bearer {API_KEY}"}


@dataclass
class Message:
    """One message, as any door can carry it."""

    sender: str = "hi@example.com"
    to: list[str] = field(default_factory=lambda: ["u@example.org"])
    text: str = "hello"
    at: int | None = int(NOW) + 600
    batch_id: str | None = None


#: A door: (the application on fakes, a message) -> (stable code or "OK", status or reply).
Door = Callable[[Ingest, Message], tuple[str, str]]


def via_email(k: Ingest, m: Message) -> tuple[str, str]:
    body: dict[str, Any] = {"from": m.sender, "to": m.to, "subject": "s", "text": m.text}
    if m.at is not None:
        body["scheduledAt"] = m.at
    with TestClient(k.app, raise_server_exceptions=False) as c:
        r = c.post("/email", json=body, headers=AUTH)
    if r.status_code < 300:
        return "OK", str(r.status_code)
    return r.json()["error"]["code"], str(r.status_code)


def via_sendgrid(k: Ingest, m: Message) -> tuple[str, str]:
    body: dict[str, Any] = {
        "personalizations": [{"to": [{"email": a} for a in m.to]}],
        "from": {"email": m.sender},
        "subject": "s",
        "content": [{"type": "text/plain", "value": m.text}],
    }
    if m.at is not None:
        body["send_at"] = m.at
    if m.batch_id is not None:
        body["batch_id"] = m.batch_id
    with TestClient(k.app, raise_server_exceptions=False) as c:
        r = c.post("/v3/mail/send", json=body, headers=AUTH)
    if r.status_code < 300:
        return "OK", str(r.status_code)
    [error] = r.json()["errors"]
    return error["help"], str(r.status_code)


def via_smtp(k: Ingest, m: Message) -> tuple[str, str]:
    headers = f"From: {m.sender}\r\nTo: {', '.join(m.to)}\r\nSubject: s\r\n"
    if m.at is not None:
        headers += f"X-Scheduled-At: {m.at}\r\n"
    if m.batch_id is not None:
        headers += "X-SMTPAPI: " + orjson.dumps({"batch_id": m.batch_id}).decode() + "\r\n"
    session = Session(loop=None)
    session.auth_data = ACCOUNT
    envelope = Envelope()
    envelope.mail_from = m.sender
    envelope.rcpt_tos = list(m.to)
    envelope.original_content = f"{headers}\r\n{m.text}\r\n".encode()
    handler = SubmissionHandler(k.view, k.submitter)
    reply = asyncio.run(handler.handle_DATA(None, session, envelope))
    if reply.startswith("250"):
        return "OK", reply[:9]
    match = re.match(r"^(\d{3} \d\.\d{1,3}\.\d{1,3}) ([A-Z_]+):", reply)
    assert match is not None, reply
    return match[2], match[1]


DOORS: dict[str, Door] = {"email": via_email, "sendgrid": via_sendgrid, "smtp": via_smtp}


def plan(k: Ingest, **changes: Any) -> None:
    state = k.view.account_state
    k.view.account_state = state.model_copy(update={"plan": state.plan.model_copy(update=changes)})


def disable(k: Ingest) -> None:
    k.view.account_state = k.view.account_state.model_copy(update={"status": "disabled"})


def expired_batch(k: Ingest) -> None:
    k.view.batches["old"] = batch("old", NOW - timedelta(days=11).total_seconds())


@dataclass
class Case:
    """A broken rule: how to break it, and what each door answers (HTTP status, SMTP reply)."""

    code: str
    http: str
    smtp: str
    message: Message = field(default_factory=Message)
    setup: Callable[[Ingest], None] = lambda k: None
    doors: tuple[str, ...] = ("email", "sendgrid", "smtp")


CASES = {
    "unverified domain": Case(
        "DOMAIN_NOT_VERIFIED", "403", "553 5.7.1", Message(sender="hi@unverified.test")
    ),
    "another's domain": Case(
        "DOMAIN_NOT_OWNED", "403", "553 5.7.1", Message(sender="hi@other.test")
    ),
    "suppressed recipient": Case(
        "RECIPIENT_SUPPRESSED",
        "400",
        "550 5.7.1",
        Message(to=["ok@example.org", "gone@example.org"]),
        lambda k: k.view.suppressed.update({"gone@example.org": "hard_bounce"}),
    ),
    "more recipients than the plan": Case(
        "TOO_MANY_RECIPIENTS",
        "400",
        "554 5.5.3",
        Message(to=[f"u{i}@example.org" for i in range(51)]),
    ),
    "account disabled": Case("ACCOUNT_DISABLED", "403", "550 5.7.1", setup=disable),
    "plan without scheduling": Case(
        "SCHEDULING_NOT_ALLOWED",
        "403",
        "550 5.7.1",
        setup=lambda k: plan(k, scheduling_allowed=False),
    ),
    "larger than the plan": Case(
        "MESSAGE_TOO_LARGE",
        "413",
        "552 5.3.4",
        Message(text="x" * 2000),
        lambda k: plan(k, max_message_bytes=1000),
    ),
    "in the past": Case("SCHEDULED_AT_IN_PAST", "400", "554 5.5.4", Message(at=int(NOW) - 1)),
    "beyond the plan's horizon": Case(
        "SCHEDULED_AT_TOO_FAR",
        "400",
        "554 5.5.4",
        Message(at=int(NOW) + 7200),
        lambda k: plan(k, max_horizon_seconds=3600),
    ),
    "expired batch": Case(
        "INVALID_BATCH_ID",
        "400",
        "554 5.5.4",
        Message(batch_id="old"),
        expired_batch,
        doors=("sendgrid", "smtp"),
    ),
    "unknown batch": Case(
        "INVALID_BATCH_ID", "400", "554 5.5.4", Message(batch_id="nope"), doors=("sendgrid", "smtp")
    ),
    "broker down": Case(
        "BROKER_UNAVAILABLE",
        "503",
        "451 4.3.0",
        setup=lambda k: setattr(k.publisher, "down", True),
    ),
}


def door_cases() -> Iterator[Any]:
    for name, case in CASES.items():
        for door in case.doors:
            yield pytest.param(door, case, id=f"{door}: {name}")


@pytest.mark.parametrize(("door", "case"), door_cases())
def test_a_broken_rule_is_the_same_refusal_at_every_door(door: str, case: Case) -> None:
    k = ingest(FakeClock(NOW))
    case.setup(k)
    code, answer = DOORS[door](k, case.message)
    assert code == case.code
    assert answer == (case.smtp if door == "smtp" else case.http)
    assert k.publisher.events == []


@pytest.mark.parametrize("door", DOORS)
def test_every_door_schedules_through_the_core(door: str) -> None:
    k = ingest(FakeClock(NOW))
    k.view.batches["live"] = batch("live", NOW - 3600)
    message = Message(batch_id=None if door == "email" else "live")
    code, _ = DOORS[door](k, message)
    assert code == "OK"
    [event] = k.publisher.events
    assert isinstance(event, Scheduled)
    assert (event.source, event.due_at, event.content.rcpt_to) == (
        "http" if door == "email" else door,
        int(NOW) + 600,
        ["u@example.org"],
    )
    assert event.batch_id == message.batch_id


def draft(to: str, at: int | None = int(NOW) + 60) -> Draft:
    req = EmailRequest.model_validate({"from": "hi@example.com", "to": to, "text": "t"})
    return Draft(lambda message_id: compose(req, message_id), None if at is None else When(at))


def test_one_broken_message_refuses_the_whole_submission() -> None:
    k = ingest(FakeClock(NOW))
    k.view.suppressed["b@example.org"] = "complaint"
    submission = Submission(
        k.view.account_state, "http", [draft("a@example.org"), draft("b@example.org")]
    )
    with pytest.raises(SubmitError) as refused:
        asyncio.run(k.submitter.submit(submission))
    assert refused.value.code == "RECIPIENT_SUPPRESSED"
    assert k.publisher.events == []


def test_a_retry_after_the_due_second_replays_the_first_answer() -> None:
    """The time is judged once, by the request that made the messages: a retry after it has
    passed gets the same ids and dues, and publishes nothing more."""
    clock = FakeClock(NOW)
    k = ingest(clock)
    submission = Submission(
        k.view.account_state,
        "http",
        [draft("a@example.org"), draft("b@example.org", None)],
        idempotency_key="k1",
        digest="d1",
    )
    first = asyncio.run(k.submitter.submit(submission))
    assert first.dues == [int(NOW) + 60, None] and not first.replayed
    clock.advance(3600)
    again = asyncio.run(k.submitter.submit(submission))
    assert (again.ids, again.dues, again.replayed) == (first.ids, first.dues, True)
    assert [e.message_id for e in k.publisher.events] == first.ids


def test_a_refused_submission_frees_its_key_for_the_retry() -> None:
    k = ingest(FakeClock(NOW))
    submission = Submission(
        k.view.account_state, "smtp", [draft("a@example.org")], idempotency_key="k", digest="d"
    )
    k.publisher.down = True
    with pytest.raises(SubmitError) as refused:
        asyncio.run(k.submitter.submit(submission))
    assert (refused.value.code, refused.value.status) == ("BROKER_UNAVAILABLE", 503)
    k.publisher.down = False
    accepted = asyncio.run(k.submitter.submit(submission))
    assert not accepted.replayed
    assert [e.message_id for e in k.publisher.events] == accepted.ids
    other = Submission(
        k.view.account_state, "smtp", [draft("b@example.org")], idempotency_key="k", digest="x"
    )
    with pytest.raises(SubmitError) as mismatch:
        asyncio.run(k.submitter.submit(other))
    assert mismatch.value.code == "IDEMPOTENCY_BODY_MISMATCH"


def test_sandbox_mode_judges_everything_and_publishes_nothing() -> None:
    k = ingest(FakeClock(NOW))
    k.view.suppressed["b@example.org"] = "complaint"
    account = k.view.account_state
    with pytest.raises(SubmitError):
        asyncio.run(
            k.submitter.submit(
                Submission(account, "sendgrid", [draft("b@example.org")], dry_run=True)
            )
        )
    ok = asyncio.run(
        k.submitter.submit(Submission(account, "sendgrid", [draft("a@example.org")], dry_run=True))
    )
    assert len(ok.ids) == 1 and k.publisher.events == []


def test_a_batch_is_live_for_ten_days() -> None:
    k = ingest(FakeClock(NOW))
    k.view.batches["b"] = batch("b", NOW - timedelta(days=10).total_seconds() + 1)
    account = k.view.account_state
    asyncio.run(k.submitter.submit(Submission(account, "smtp", [draft("a@example.org")], "b")))
    assert k.publisher.events[0].batch_id == "b"
    assert to_datetime(NOW) - k.view.batches["b"].created_at < timedelta(days=10)
