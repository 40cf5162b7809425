"""The SMTP submission handler called in-process (no broker, no socket): spoofing, empty
schedule headers, crashes on hostile bytes, reply length, the catch-all."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime

import pytest
from aiosmtpd.smtp import Envelope, Session

from kairos.clock import FakeClock
from schemas.events import Scheduled
from schemas.reference import AccountState, BatchState, DomainState
from services.ingest.smtp import (
    MAX_RECIPIENTS,
    SubmissionHandler,
    queued_reply,
    smtp_reply,
    with_enhanced_status,
)
from services.ingest.submit import Submitter
from services.reference.plans import PLANS

NOW = 1_800_000_000.0
EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
ACCOUNT = "acc_1"
#: the domains of ACCOUNT: verified or not. ``other.test`` is another account's verified one.
DOMAINS = {"example.com": True, "unverified.test": False}
#: a reply that shows internals: aiosmtpd's default for an exception, or a traceback
LEAK = re.compile(r"Error: \(|Traceback|object has no attribute|Exception")


def account(plan: str = "pro") -> AccountState:
    return AccountState(
        occurred_at=EPOCH,
        account_id=ACCOUNT,
        name="t",
        status="active",
        plan=PLANS[plan],
        created_at=EPOCH,
    )


class FakeView:
    caught_up = True

    def __init__(self, plan: str = "pro") -> None:
        self.state = account(plan)

    def authenticate(self, api_key: str) -> AccountState | None:
        return self.state if api_key == "kai_good" else None

    def account(self, account_id: str) -> AccountState | None:
        return self.state if account_id == ACCOUNT else None

    def domain(self, account_id: str, domain: str) -> DomainState | None:
        if account_id != ACCOUNT or domain not in DOMAINS:
            return None
        return DomainState(
            occurred_at=EPOCH,
            account_id=ACCOUNT,
            domain=domain,
            verified=DOMAINS[domain],
            changed_at=EPOCH,
        )

    def suppression(self, account_id: str, address: str) -> None:
        return None

    def batch(self, account_id: str, batch_id: str) -> BatchState | None:
        if batch_id != "b1":
            return None
        created = datetime.fromtimestamp(NOW - 3600, UTC)  # live: made an hour ago
        return BatchState(
            occurred_at=created, account_id=ACCOUNT, batch_id="b1", created_at=created
        )


class FakePublisher:
    def __init__(self, fail: Exception | None = None) -> None:
        self.events: list[Scheduled] = []
        self.fail = fail

    async def publish_many(self, events: Sequence[Scheduled]) -> None:
        if self.fail is not None:
            raise self.fail
        self.events.extend(events)

    def ready(self) -> bool:
        return True


def handler(publisher: FakePublisher | None = None, plan: str = "pro") -> SubmissionHandler:
    view = FakeView(plan)
    submitter = Submitter(view, publisher or FakePublisher(), FakeClock(NOW))  # type: ignore[arg-type]
    return SubmissionHandler(view, submitter)


def msg(headers: bytes = b"", sender: bytes = b"hello@example.com", body: bytes = b"hi") -> bytes:
    return (
        b"From: " + sender + b"\r\nTo: user@example.org\r\nSubject: t\r\n" + headers + b"\r\n"
        b"" + body + b"\r\n"
    )


async def submit(
    raw: bytes,
    rcpts: list[str] | None = None,
    mail_from: str = "hello@example.com",
    h: SubmissionHandler | None = None,
) -> tuple[str, list[Scheduled]]:
    """DATA as aiosmtpd hands it over: the reply and what was published."""
    h = h or handler()
    session = Session(loop=None)
    session.auth_data = ACCOUNT
    envelope = Envelope()
    envelope.mail_from = mail_from
    envelope.rcpt_tos = rcpts or ["user@example.org"]
    envelope.original_content = raw
    reply = await h.handle_DATA(None, session, envelope)
    assert not LEAK.search(reply), reply
    assert len(reply) <= 510
    publisher = h.submitter.publisher
    return reply, publisher.events if isinstance(publisher, FakePublisher) else []


def head(reply: str) -> str:
    """``554 5.5.4 CODE`` of a refusal."""
    return reply.split(":")[0]


# -- 1. spoofing --------------------------------------------------------------------------------


async def test_a_second_from_is_refused() -> None:
    reply, events = await submit(msg(b"From: ceo@other.test\r\n"))
    assert (head(reply), events) == ("554 5.6.0 MULTIPLE_FROM", [])
    reply, _ = await submit(msg(b"FROM: hello@example.com\r\n"))
    assert head(reply) == "554 5.6.0 MULTIPLE_FROM"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (msg(sender=b"ceo@other.test"), "553 5.7.1 DOMAIN_NOT_OWNED"),
        (msg(sender=b"Hello <x@unverified.test>"), "553 5.7.1 DOMAIN_NOT_VERIFIED"),
        (msg(b"Sender: ceo@other.test\r\n"), "553 5.7.1 DOMAIN_NOT_OWNED"),
        (msg(b"Sender: x@unverified.test\r\n"), "553 5.7.1 DOMAIN_NOT_VERIFIED"),
        (msg(sender=b"hello@example.com <ceo@other.test>"), "553 5.1.7 INVALID_ADDRESS"),
        (msg(sender=b"hello@example.com, ceo@other.test"), "553 5.1.7 INVALID_ADDRESS"),
        (msg(sender=b"ceo@other.test)<hello@example.com>"), "553 5.1.7 INVALID_ADDRESS"),
        (b"To: user@example.org\r\nSubject: no from\r\n\r\nhi\r\n", "554 5.6.0 MISSING_FROM"),
    ],
)
async def test_from_and_sender_must_be_one_address_at_a_verified_domain(
    raw: bytes, expected: str
) -> None:
    reply, events = await submit(raw)
    assert (head(reply), events) == (expected, [])


async def test_envelope_sender_is_checked_at_mail_from_and_again_at_data() -> None:
    h = handler()
    session = Session(loop=None)
    session.auth_data = ACCOUNT
    for address, expected in [
        ("ceo@other.test", "553 5.7.1 DOMAIN_NOT_OWNED"),
        ("x@unverified.test", "553 5.7.1 DOMAIN_NOT_VERIFIED"),
        ("nobody", "553 5.1.7 INVALID_ADDRESS"),
    ]:
        envelope = Envelope()
        reply = await h.handle_MAIL(None, session, envelope, address, [])
        assert head(reply) == expected
        assert envelope.mail_from is None
    envelope = Envelope()
    assert await h.handle_MAIL(None, session, envelope, "hello@Example.com", []) == "250 2.1.0 OK"
    assert envelope.mail_from == "hello@Example.com"
    reply, events = await submit(msg(), mail_from="bounce@other.test")
    assert (head(reply), events) == ("553 5.7.1 DOMAIN_NOT_OWNED", [])


async def test_bcc_is_stripped_and_its_recipients_stay_in_the_envelope() -> None:
    raw = msg(b"Bcc: hidden@example.org,\r\n other@example.org\r\nX-Kairos-Batch-Id: b1\r\n")
    reply, [event] = await submit(raw, rcpts=["user@example.org", "hidden@example.org"])
    assert reply.startswith("250 2.0.0 Queued as ")
    assert b"Bcc" not in event.content.mime.encode() and "hidden" not in event.content.mime
    assert "X-Kairos" not in event.content.mime
    assert event.content.rcpt_to == ["user@example.org", "hidden@example.org"]
    assert event.content.mime.startswith("From: hello@example.com\r\nTo: user@example.org\r\n")


# -- 2. a present schedule header is never ignored ----------------------------------------------


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        (b"X-Scheduled-At:\r\n", "554 5.5.4 SCHEDULED_AT_INVALID"),
        (b"X-Scheduled-At:   \t\r\n", "554 5.5.4 SCHEDULED_AT_INVALID"),
        (b"X-Scheduled-At:\r\n \r\n", "554 5.5.4 SCHEDULED_AT_INVALID"),
        (b"X-Scheduled-At : 1800000060\r\n", "554 5.5.4 SCHEDULED_AT_INVALID"),
        (b"x-scheduled-at\t:1800000060\r\n", "554 5.5.4 SCHEDULED_AT_INVALID"),
        (
            b"X-Scheduled-At: 1800000060\r\nX-Scheduled-At: 1800000060\r\n",
            "554 5.5.4 SCHEDULED_AT_INVALID",
        ),
        (b"X-SMTPAPI: {}\r\n", "554 5.5.4 INVALID_SMTPAPI"),
        (b"X-SMTPAPI:\r\n", "554 5.5.4 INVALID_SMTPAPI"),
        (b"X-SMTPAPI: \r\n", "554 5.5.4 INVALID_SMTPAPI"),
        (b'X-SMTPAPI : {"send_at": 1800000060}\r\n', "554 5.5.4 INVALID_SMTPAPI"),
        (b'X-SMTPAPI: {"batch_id": "b1"}\r\n', "554 5.5.4 INVALID_SMTPAPI"),
        (b"X-SMTPAPI: null\r\n", "554 5.5.4 INVALID_SMTPAPI"),
        (b"X-SMTPAPI: []\r\n", "554 5.5.4 INVALID_SMTPAPI"),
        (b"X-Idempotency-Key:\r\n", "554 5.5.4 INVALID_IDEMPOTENCY_KEY"),
        (b"X-Idempotency-Key : k1\r\n", "554 5.5.4 INVALID_IDEMPOTENCY_KEY"),
        (b"X-Idempotency-Key: k\r\nX-Idempotency-Key: k\r\n", "554 5.5.4 INVALID_IDEMPOTENCY_KEY"),
    ],
)
async def test_an_empty_or_malformed_kairos_header_is_refused(
    headers: bytes, expected: str
) -> None:
    reply, events = await submit(msg(headers))
    assert (head(reply), events) == (expected, []), reply


async def test_a_valid_schedule_still_schedules_and_its_headers_are_not_stored() -> None:
    reply, [event] = await submit(
        msg(
            b"X-Scheduled-At: 1800000060\r\nX-Idempotency-Key: k1\r\nX-SMTPAPI:"
            b' {"send_at": 1800000060, "batch_id": "b1", "category": "c"}\r\n'
        )
    )
    assert reply == f"250 2.0.0 Scheduled as {event.message_id} for 1800000060"
    assert (event.due_at, event.batch_id) == (1800000060, "b1")
    assert "X-Scheduled-At" not in event.content.mime and "X-SMTPAPI" not in event.content.mime
    assert "X-Idempotency-Key" not in event.content.mime


async def test_no_schedule_header_is_an_immediate_send() -> None:
    reply, [event] = await submit(msg(b"X-Other: \r\n"))
    assert reply == f"250 2.0.0 Queued as {event.message_id}"
    assert event.due_at == int(NOW)


# -- 3. hostile bytes and types answered, never an exception -----------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (msg(b"X-Scheduled-At: 18000\xff0060\r\n"), "554 5.5.4 SCHEDULED_AT_INVALID"),
        (msg(b"X-Scheduled-At: \xc3\xa9\r\n"), "554 5.5.4 SCHEDULED_AT_INVALID"),
        (msg(b"X-Idempotency-Key: k\xe9y\r\n"), "554 5.5.4 INVALID_IDEMPOTENCY_KEY"),
        (msg(b'X-SMTPAPI: {"send_at": "\xff"}\r\n'), "554 5.5.4 INVALID_SMTPAPI"),
        (msg(sender=b"h\xe9llo@example.com"), "554 5.6.0 INVALID_HEADER_VALUE"),
        (msg(sender=b"H\xc3\xa9llo <hello@ex\xc3\xa4mple.com>"), "553 5.1.7 INVALID_ADDRESS"),
        (
            msg(b'X-SMTPAPI: {"send_at": 1800000060, "batch_id": ["b1"]}\r\n'),
            "554 5.5.4 INVALID_BATCH_ID",
        ),
        (
            msg(b'X-SMTPAPI: {"send_at": 1800000060, "batch_id": 7}\r\n'),
            "554 5.5.4 INVALID_BATCH_ID",
        ),
        (
            msg(b'X-SMTPAPI: {"send_at": 1800000060, "batch_id": null}\r\n'),
            "554 5.5.4 INVALID_BATCH_ID",
        ),
        (
            msg(b'X-SMTPAPI: {"send_at": 1800000060, "batch_id": "nope"}\r\n'),
            "554 5.5.4 INVALID_BATCH_ID",
        ),
        (msg(b'X-SMTPAPI: {"send_at": [1800000060]}\r\n'), "554 5.5.4 SCHEDULED_AT_INVALID"),
        (msg(b'X-SMTPAPI: {"send_at": true}\r\n'), "554 5.5.4 SCHEDULED_AT_INVALID"),
        (msg(b'X-SMTPAPI: {"send_at": {"a": 1}}\r\n'), "554 5.5.4 SCHEDULED_AT_INVALID"),
        (msg(b'X-SMTPAPI: {"send_at": 1800000060.5}\r\n'), "554 5.5.4 SCHEDULED_AT_FRACTIONAL"),
        (msg(b'X-SMTPAPI: {"send_each_at": "1800000060"}\r\n'), "554 5.5.4 INVALID_SMTPAPI"),
        (
            msg(b'X-SMTPAPI: {"send_each_at": [1800000060, 1800000061]}\r\n'),
            "554 5.5.4 INVALID_SMTPAPI",
        ),
        (msg(b'X-SMTPAPI: {"send_each_at": [null]}\r\n'), "554 5.5.4 SCHEDULED_AT_INVALID"),
        (
            msg(b'X-SMTPAPI: {"to": ["x@evil.test"], "send_at": 1800000060}\r\n'),
            "554 5.5.4 INVALID_SMTPAPI",
        ),
        (
            msg(b'X-SMTPAPI: {"send_at": 1800000060}\r\nX-Scheduled-At: 1800000061\r\n'),
            "554 5.5.4 SCHEDULED_AT_CONFLICT",
        ),
        (msg(b"X-SMTPAPI: " + b"[" * 2000 + b"]" * 2000 + b"\r\n"), "554 5.5.4 INVALID_SMTPAPI"),
        (msg(b"X-Scheduled-At: 2030-02-30T00:00:00Z\r\n"), "554 5.5.4 SCHEDULED_AT_INVALID"),
        (msg(b"X-Scheduled-At: 99999999999999999999\r\n"), "554 5.5.4 SCHEDULED_AT_INVALID"),
        (msg(b"X-Scheduled-At: 4102444800\r\n"), "554 5.5.4 SCHEDULED_AT_TOO_FAR"),
        (msg(b"X-Scheduled-At: -1\r\n"), "554 5.5.4 SCHEDULED_AT_IN_PAST"),
        (msg(b"Subject: x\nBcc: evil@evil.test\r\n"), "554 5.6.0 INVALID_HEADER_VALUE"),
        (msg(b"X-Scheduled-At: 1800000060\rX-Other: 1\r\n"), "554 5.5.4 SCHEDULED_AT_INVALID"),
        (msg(b"X-\x00: 1\r\n"), "554 5.6.0 INVALID_HEADER_NAME"),
        (b"", "554 5.6.0 MISSING_FROM"),
        (b"\x00\xff\xfe\r\n\r\n", "554 5.6.0 INVALID_HEADER_NAME"),
    ],
)
async def test_hostile_values_get_a_proper_refusal(raw: bytes, expected: str) -> None:
    reply, events = await submit(raw)
    assert (head(reply), events) == (expected, []), reply


async def test_an_8bit_body_is_accepted_and_stored_as_base64() -> None:
    reply, [event] = await submit(msg(body=b"caf\xe9 \xff"))
    assert reply.startswith("250 2.0.0 Queued as")
    assert event.content.mime_encoding == "base64"


async def test_an_unexpected_exception_is_a_generic_451_and_nothing_leaks() -> None:
    publisher = FakePublisher(fail=AttributeError("'Header' object has no attribute 'strip'"))
    h = handler(publisher)
    reply, _ = await submit(msg(), h=h)
    assert reply == "451 4.3.0 INTERNAL_ERROR: internal error; try again later"
    assert await h.handle_exception(KeyError("secret")) == reply


async def test_a_long_value_is_not_echoed_past_one_reply_line() -> None:
    reply, _ = await submit(msg(b"X-Scheduled-At: " + b"x" * 900 + b"\r\n"))
    assert reply.startswith("554 5.5.4 SCHEDULED_AT_INVALID") and len(reply) <= 510
    assert smtp_reply("X", "\r\nBcc: a\x00" + "y" * 1000).count("\r") == 0
    assert len(smtp_reply("X", "y" * 1000)) == 510


# -- 4. the 250 of a thousand messages fits one reply line ------------------------------------


async def test_a_thousand_messages_are_answered_with_the_first_id_and_a_count() -> None:
    rcpts = [f"r{i}@example.org" for i in range(MAX_RECIPIENTS)]
    times = ",\r\n ".join(str(int(NOW) + 60 + i) for i in range(MAX_RECIPIENTS))
    raw = msg(b'X-SMTPAPI: {"send_each_at": [' + times.encode() + b"]}\r\n")
    reply, events = await submit(raw, rcpts=rcpts)
    assert len(events) == MAX_RECIPIENTS
    first = events[0]
    assert reply == (
        f"250 2.0.0 Scheduled 1000 messages as {first.message_id} for {int(NOW) + 60}"
        f" (+999, the last for {int(NOW) + 1059})"
    )
    assert len(reply) + 2 <= 512


def test_queued_reply_lists_every_id_only_when_it_fits() -> None:
    ids = [f"{i:036d}" for i in range(20)]
    assert queued_reply(ids[:2], [None, None]) == f"250 2.0.0 Queued as {ids[0]} {ids[1]}"
    assert queued_reply(ids, [None] * 20) == f"250 2.0.0 Queued 20 messages as {ids[0]} (+19)"
    assert queued_reply(ids[:2], [5, 6]) == f"250 2.0.0 Scheduled as {ids[0]} for 5, {ids[1]} for 6"


async def test_recipients_beyond_the_cap_are_deferred_with_452() -> None:
    h = handler()
    envelope = Envelope()
    envelope.rcpt_tos = [f"r{i}@example.org" for i in range(MAX_RECIPIENTS)]
    reply = await h.handle_RCPT(None, Session(loop=None), envelope, "one@example.org", [])
    assert head(reply) == "452 4.5.3 TOO_MANY_RECIPIENTS"
    assert len(envelope.rcpt_tos) == MAX_RECIPIENTS
    reply = await h.handle_RCPT(None, Session(loop=None), Envelope(), "nodomain", [])
    assert head(reply) == "553 5.1.3 INVALID_RECIPIENT"


def test_aiosmtpd_refusals_get_enhanced_and_stable_codes() -> None:
    assert with_enhanced_status("500 Line too long (see RFC5321 4.5.3.1.6)").startswith(
        "500 5.5.2 LINE_TOO_LONG: "
    )
    assert with_enhanced_status("500 Error: strict ASCII mode").startswith(
        "500 5.5.2 NON_ASCII_COMMAND: "
    )
    assert with_enhanced_status("503 Error: need MAIL command") == (
        "503 5.5.1 Error: need MAIL command"
    )
    assert with_enhanced_status("553 5.1.3 Error: malformed address") == (
        "553 5.1.3 Error: malformed address"
    )
    assert with_enhanced_status("250-kairos") == "250-kairos"
    assert with_enhanced_status("334 ") == "334 "


# -- Mailgun's X-Mailgun-Deliver-By -------------------------------------------------------------

DELIVER_BY = b"X-Mailgun-Deliver-By: Fri, 15 Jan 2027 08:01:00 -0000\r\n"  # NOW + 60


async def test_x_mailgun_deliver_by_schedules_and_is_not_stored() -> None:
    reply, [event] = await submit(msg(DELIVER_BY))
    assert reply == f"250 2.0.0 Scheduled as {event.message_id} for 1800000060"
    assert event.due_at == 1800000060
    assert "X-Mailgun-Deliver-By" not in event.content.mime
    same = DELIVER_BY + b"X-Scheduled-At: 2027-01-15T08:01:00Z\r\n"
    assert (await submit(msg(same)))[1][0].due_at == 1800000060


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        (b"X-Mailgun-Deliver-By:\r\n", "554 5.5.4 SCHEDULED_AT_INVALID"),
        (b"X-Mailgun-Deliver-By:  \t\r\n", "554 5.5.4 SCHEDULED_AT_INVALID"),
        (b"X-Mailgun-Deliver-By : Fri, 15 Jan 2027 08:01:00 -0000\r\n",
         "554 5.5.4 SCHEDULED_AT_INVALID"),
        (DELIVER_BY + DELIVER_BY, "554 5.5.4 SCHEDULED_AT_INVALID"),
        (b"X-Mailgun-Deliver-By: tomorrow\r\n", "554 5.5.4 SCHEDULED_AT_INVALID"),
        (b"X-Mailgun-Deliver-By: 1800000060\r\n", "554 5.5.4 SCHEDULED_AT_INVALID"),
        (b"X-Mailgun-Deliver-By: Fri, 15 Jan 2027 08:01:00\r\n",
         "554 5.5.4 SCHEDULED_AT_INVALID"),
        (b"X-Mailgun-Deliver-By: Fri, 30 Feb 2027 08:01:00 +0000\r\n",
         "554 5.5.4 SCHEDULED_AT_INVALID"),
        (b"X-Mailgun-Deliver-By: Thu, 14 Jan 2027 08:01:00 +0000\r\n",
         "554 5.5.4 SCHEDULED_AT_IN_PAST"),
        (b"X-Mailgun-Deliver-By: Tue, 19 Jan 2027 08:01:00 +0000\r\n",
         "554 5.5.4 SCHEDULED_AT_TOO_FAR"),  # Mailgun's 3 days
        (DELIVER_BY + b"X-Scheduled-At: 1800000061\r\n", "554 5.5.4 SCHEDULED_AT_CONFLICT"),
    ],
)  # fmt: skip
async def test_a_bad_x_mailgun_deliver_by_is_refused_never_sent_now(
    headers: bytes, expected: str
) -> None:
    reply, events = await submit(msg(headers))
    assert (head(reply), events) == (expected, []), reply
