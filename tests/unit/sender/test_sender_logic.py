"""The sender's pure logic: verdicts, backoff, outcomes, message preparation, DKIM."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from email import message_from_bytes

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from schemas.events import Deferred, Delivered, Dispatch, Failed, MessageContent
from services.sender.message import dkim_sign, prepare
from services.sender.outcome import result_of
from services.sender.policy import RetryPolicy, is_hard_bounce, verdict
from services.sender.relay import Refusal, RelayReply, reply_for_all_refused, split_enhanced

T = 1_800_000_000
RAW = (
    b"From: a@x.test\r\nTo: b@y.test\r\nSubject: hi\r\nDate: Mon, 1 Jan 2024 00:00:00 +0000"
    b"\r\nX-Scheduled-At: 123\r\nX-Idempotency-Key: k\r\nMessage-ID: <m@x.test>\r\n\r\nbody\r\n"
)


def dispatch(attempt: int = 1) -> Dispatch:
    now = datetime.fromtimestamp(T, UTC)
    return Dispatch(
        occurred_at=now,
        account_id="a",
        message_id="m",
        due_at=T,
        attempt=attempt,
        submitted_at=now,
        emitted_at=now,
        lateness_ms=0,
        validated_at=now,
        content=MessageContent(
            mail_from="a@x.test",
            rcpt_to=["b@y.test", "c@y.test"],
            from_domain="x.test",
            mime=RAW.decode(),
            size=len(RAW),
        ),
    )


def test_verdicts() -> None:
    assert [verdict(c) for c in (250, 251, 421, 450, 451, 550, 554)] == [
        "delivered",
        "delivered",
        "deferred",
        "deferred",
        "deferred",
        "failed",
        "failed",
    ]


def test_backoff_doubles_caps_and_stops() -> None:
    policy = RetryPolicy(base=60, cap=600, max_attempts=5, max_age=3600)
    assert policy.retry_at(1, T, T) == T + 61
    assert policy.retry_at(2, T, T) == T + 121
    assert policy.retry_at(4, T, T) == T + 481
    assert policy.retry_at(5, T, T) is None, "max attempts"
    assert policy.retry_at(2, T, T + 3500) is None, "max age"


def test_hard_bounce_codes() -> None:
    assert is_hard_bounce(550, "5.1.1")
    assert is_hard_bounce(550, "5.1.10")
    assert not is_hard_bounce(450, "4.1.1")
    assert not is_hard_bounce(550, "5.7.1")
    assert split_enhanced("5.1.1 <b@y.test>: User unknown") == ("5.1.1", "<b@y.test>: User unknown")
    assert split_enhanced("Ok") == (None, "Ok")


def test_delivered_with_partial_refusal_suppresses_the_bounced_address() -> None:
    reply = RelayReply(250, "queued", "2.0.0", (Refusal("c@y.test", 550, "5.1.1", "unknown"),))
    result = result_of(dispatch(), reply, T + 0.25, RetryPolicy())
    assert isinstance(result.outcome, Delivered)
    assert result.outcome.lateness_ms == 250
    assert [r.address for r in result.outcome.refused] == ["c@y.test"]
    assert result.hard_bounces == ["c@y.test"]
    assert result.retry is None


def test_permanent_failure() -> None:
    reply = reply_for_all_refused(
        (Refusal("b@y.test", 550, "5.1.1", "unknown"), Refusal("c@y.test", 550, "5.1.1", "unknown"))
    )
    result = result_of(dispatch(), reply, T, RetryPolicy())
    assert isinstance(result.outcome, Failed)
    assert (result.outcome.reason, result.outcome.enhanced_status) == ("smtp_permanent", "5.1.1")
    assert result.hard_bounces == ["b@y.test", "c@y.test"]


def test_transient_failure_schedules_the_next_attempt_then_gives_up() -> None:
    reply = RelayReply(450, "mailbox busy", "4.2.1")
    result = result_of(dispatch(1), reply, T, RetryPolicy(base=10))
    assert isinstance(result.outcome, Deferred)
    assert result.retry is not None
    assert (result.retry.attempt, result.retry.due_at, result.retry.source) == (2, T + 11, "retry")
    assert result.outcome.retry_at == T + 11
    last = result_of(dispatch(8), reply, T, RetryPolicy(max_attempts=8))
    assert isinstance(last.outcome, Failed) and last.outcome.reason == "retries_exhausted"
    assert last.retry is None


def test_prepare_sets_date_now_and_strips_internal_headers() -> None:
    out = message_from_bytes(prepare(RAW, T, "x.test"))
    assert out["Date"] == "Fri, 15 Jan 2027 08:00:00 +0000"
    assert out["X-Scheduled-At"] is None and out["X-Idempotency-Key"] is None
    assert out["Message-ID"] == "<m@x.test>"


def test_prepare_strips_folded_internal_fields_and_keeps_the_rest_byte_for_byte() -> None:
    raw = (
        b'From: a@x.test\nX-SMTPAPI: {"send_at": 1,\n  "batch_id": "b"}\n'
        b"Subject: a long\n\tfolded subject\nX-Scheduled-At-Note: kept\n"
        b"x-idempotency-key : k\nDATE: Mon, 1 Jan 2024 00:00:00 +0000\n\nline 1\nline 2\n"
    )
    out = prepare(raw, T, "x.test")
    head, _, body = out.partition(b"\r\n\r\n")
    assert body == b"line 1\r\nline 2\r\n"
    lines = head.split(b"\r\n")
    assert lines[:4] == [
        b"From: a@x.test",
        b"Subject: a long",
        b"\tfolded subject",
        b"X-Scheduled-At-Note: kept",
    ]
    assert lines[4] == b"Date: Fri, 15 Jan 2027 08:00:00 +0000"
    assert lines[5].startswith(b"Message-ID: <") and lines[5].endswith(b"@x.test>")
    assert len(lines) == 6
    parsed = message_from_bytes(out)
    assert parsed["Subject"] == "a long\r\n\tfolded subject"
    assert parsed.get_all("Date") == ["Fri, 15 Jan 2027 08:00:00 +0000"]


@pytest.mark.parametrize(
    ("raw", "body"),
    [(b"From: a@x.test\r\n", b""), (b"From: a@x.test", b""), (b"\r\nonly a body", b"only a body")],
)
def test_prepare_without_a_body_or_without_headers(raw: bytes, body: bytes) -> None:
    head, _, rest = prepare(raw, T, "x.test").partition(b"\r\n\r\n")
    assert rest == body
    assert head.split(b"\r\n")[-2].startswith(b"Date: ")


@pytest.fixture(scope="module")
def rsa_key() -> tuple[bytes, bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, public


def test_dkim_signature_verifies(rsa_key: tuple[bytes, bytes]) -> None:
    import base64

    private, public = rsa_key
    signed = dkim_sign(prepare(RAW, T, "x.test"), "x.test", "kairos", private)
    assert signed.startswith(b"DKIM-Signature:")
    record = b"v=DKIM1; k=rsa; p=" + base64.b64encode(public)

    def dns(name: bytes, timeout: int = 5) -> bytes:
        assert name == b"kairos._domainkey.x.test."
        return record

    assert dkim.verify(signed, dnsfunc=dns)
    assert not dkim.verify(signed.replace(b"body", b"BODY"), dnsfunc=dns)


def test_one_click_unsubscribe_fields_are_signed(rsa_key: tuple[bytes, bytes]) -> None:
    """RFC 8058 3: both fields are covered by the DKIM signature; a client's own
    List-Unsubscribe is replaced, not doubled."""
    import base64

    from services.sender.message import unsubscribe_fields

    private, public = rsa_key
    raw = RAW.replace(b"Subject:", b"List-Unsubscribe: <https://old.test/x>\r\nSubject:", 1)
    fields = unsubscribe_fields("https://mail.x.test/u/TOKEN", "unsub@x.test")
    signed = dkim_sign(prepare(raw, T, "x.test", fields), "x.test", "kairos", private)
    head = signed.split(b"\r\n\r\n", 1)[0]
    assert b"old.test" not in head
    assert head.count(b"\r\nList-Unsubscribe:") == 1
    assert b"List-Unsubscribe: <https://mail.x.test/u/TOKEN>,\r\n <mailto:unsub@x.test?" in head
    assert b"\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click" in head
    unfolded = re.sub(rb"\r\n[ \t]+", b" ", head)
    signed_names = re.search(rb"DKIM-Signature:.*?\bh=([^;]+);", unfolded)
    assert signed_names is not None
    names = signed_names[1].replace(b" ", b"").lower().split(b":")
    assert {b"list-unsubscribe", b"list-unsubscribe-post"} <= set(names)
    record = b"v=DKIM1; k=rsa; p=" + base64.b64encode(public)
    assert dkim.verify(signed, dnsfunc=lambda name, timeout=5: record)
    tampered = signed.replace(b"One-Click", b"One-Clack")
    assert not dkim.verify(tampered, dnsfunc=lambda name, timeout=5: record)
