"""SMTP submission on real Kafka with real clients (smtplib, swaks): AUTH with an API key,
X-Scheduled-At, X-SMTPAPI, X-Idempotency-Key, and the exact reply codes of every rejection."""

from __future__ import annotations

import email.utils
import os
import shutil
import smtplib
import subprocess
import time
from collections.abc import Iterator
from email import message_from_bytes
from pathlib import Path

import httpx
import pytest

from tests.integration.conftest import Stack, free_port, make_stack
from tests.integration.test_pipeline import wait_for_eml

pytestmark = pytest.mark.kafka


@pytest.fixture(scope="module")
def smtp_stack(bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = make_stack(bootstrap, tmp_path_factory.mktemp("smtp"))
    s.env["KAIROS_SMTP_PORT"] = str(free_port())
    try:
        s.start("sink", "ingest", "timer", "validator", "sender")
        s.create_account("smtp", domain="example.com")
        yield s
    finally:
        s.stop_all()


def port(stack: Stack) -> int:
    return int(stack.env["KAIROS_SMTP_PORT"])


def message(headers: str = "", sender: str = "hello@example.com", body: str = "hi") -> str:
    return (
        f"From: {sender}\r\nTo: user@example.org\r\nSubject: smtp test\r\n{headers}\r\n{body}\r\n"
    )


def send(
    stack: Stack,
    data: str | bytes,
    rcpts: list[str] | None = None,
    key: str | None = None,
    sender: str = "hello@example.com",
) -> tuple[int, str]:
    with smtplib.SMTP("127.0.0.1", port(stack), timeout=30) as client:
        client.login("anyone", key if key is not None else stack.api_key)
        client.mail(sender)
        for r in rcpts or ["user@example.org"]:
            client.rcpt(r)
        code, reply = client.data(data.encode() if isinstance(data, str) else data)
        return code, reply.decode()


def wait_eml(outbox: Path, needle: str, timeout: float = 60) -> bytes:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for path in outbox.glob("*.eml") if outbox.exists() else []:
            data = path.read_bytes()
            if needle.encode() in data:
                return data
        time.sleep(0.1)
    raise AssertionError(f"nothing with {needle!r} delivered")


def test_scheduled_over_smtp_is_held_then_delivered_without_internal_headers(
    smtp_stack: Stack,
) -> None:
    due = int(time.time()) + 3
    code, reply = send(
        smtp_stack,
        message(f"X-Scheduled-At: {due}\r\nX-Idempotency-Key: s-1\r\n", body="scheduled over smtp"),
    )
    assert code == 250 and f"for {due}" in reply, reply
    mid = reply.split("Scheduled as ")[1].split(" ")[0]
    data = wait_eml(smtp_stack.outbox, "scheduled over smtp")
    msg = message_from_bytes(data)
    assert msg["X-Scheduled-At"] is None and msg["X-Idempotency-Key"] is None
    stored = [
        p for p in smtp_stack.outbox.glob("*.eml") if b"scheduled over smtp" in p.read_bytes()
    ]
    assert float(stored[0].name.split("-")[0]) >= due
    again = send(
        smtp_stack,
        message(f"X-Scheduled-At: {due}\r\nX-Idempotency-Key: s-1\r\n", body="scheduled over smtp"),
    )
    assert again == (code, reply), "the same key and body answer the same id"
    other = send(smtp_stack, message("X-Idempotency-Key: s-1\r\n", body="another body"))
    assert other[0] == 554 and other[1].startswith("5.5.0 IDEMPOTENCY_BODY_MISMATCH")
    assert mid in reply


def test_x_mailgun_deliver_by_schedules_over_smtp(smtp_stack: Stack) -> None:
    due = int(time.time()) + 3
    by = email.utils.formatdate(due)
    code, reply = send(smtp_stack, message(f"X-Mailgun-Deliver-By: {by}\r\n", body="mailgun smtp"))
    assert code == 250 and f"for {due}" in reply, reply
    stored = wait_for_eml(smtp_stack.outbox, "mailgun smtp")
    assert float(stored.name.split("-")[0]) >= due, "arrived early"
    assert message_from_bytes(stored.read_bytes())["X-Mailgun-Deliver-By"] is None


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ("X-Scheduled-At: 2020-01-01T00:00:00Z\r\n", (554, "5.5.4 SCHEDULED_AT_IN_PAST")),
        ("X-Mailgun-Deliver-By:  \r\n", (554, "5.5.4 SCHEDULED_AT_INVALID")),
        ("X-Mailgun-Deliver-By: tomorrow\r\n", (554, "5.5.4 SCHEDULED_AT_INVALID")),
        (
            "X-Mailgun-Deliver-By: Fri, 14 Oct 2011 23:10:10 -0000\r\n",
            (554, "5.5.4 SCHEDULED_AT_IN_PAST"),
        ),
        ("X-Scheduled-At: 2099-01-01T00:00:00Z\r\n", (554, "5.5.4 SCHEDULED_AT_TOO_FAR")),
        ("X-Scheduled-At: 2030-01-01T00:00:00\r\n", (554, "5.5.4 SCHEDULED_AT_NO_OFFSET")),
        ("X-Scheduled-At: 2030-01-01T00:00:00.5Z\r\n", (554, "5.5.4 SCHEDULED_AT_FRACTIONAL")),
        ("X-Scheduled-At: soon\r\n", (554, "5.5.4 SCHEDULED_AT_INVALID")),
        ('X-SMTPAPI: {"send_at": 1, "send_each_at": [1]}\r\n', (554, "5.5.4 INVALID_SMTPAPI")),
        ("X-SMTPAPI: not json\r\n", (554, "5.5.4 INVALID_SMTPAPI")),
    ],
)
def test_schedule_violations(smtp_stack: Stack, headers: str, expected: tuple[int, str]) -> None:
    code, reply = send(smtp_stack, message(headers))
    assert (code, " ".join(reply.split(" ")[:2]).rstrip(":")) == expected, reply


def test_ownership_auth_and_size(smtp_stack: Stack) -> None:
    code, reply = send(smtp_stack, message(sender="hi@not-mine.test"))
    assert (code, reply.split(":")[0]) == (553, "5.7.1 DOMAIN_NOT_OWNED")
    with smtplib.SMTP("127.0.0.1", port(smtp_stack), timeout=30) as client:
        client.login("anyone", smtp_stack.api_key)
        code, reply_b = client.mail("hi@not-mine.test")
        assert (code, reply_b.decode().split(":")[0]) == (553, "5.7.1 DOMAIN_NOT_OWNED")
    with smtplib.SMTP("127.0.0.1", port(smtp_stack), timeout=30) as client:
        with pytest.raises(smtplib.SMTPAuthenticationError) as err:
            client.login("anyone", "kai_wrong")
        assert err.value.smtp_code == 535
        client.ehlo()
        code, reply_b = client.mail("hello@example.com")
        assert (code, reply_b.decode()[:5]) == (530, "5.7.0")
    big = message(body=("x" * 998 + "\r\n") * 13_500)  # 13.5 MB, over the 12 MiB cap
    code, reply = send(smtp_stack, big)
    assert (code, reply.split(":")[0]) == (552, "5.3.4 MESSAGE_TOO_LARGE")
    ten_mb = message(body=("y" * 998 + "\r\n") * 10_300)  # 10.3 MB: accepted
    code, reply = send(smtp_stack, ten_mb)
    assert code == 250, reply


def test_send_each_at_makes_one_message_per_recipient(smtp_stack: Stack) -> None:
    auth = {"Authorization": f"Bearer {smtp_stack.api_key}"}
    batch = httpx.post(f"{smtp_stack.http}/v3/mail/batch", headers=auth).json()["batch_id"]
    now = int(time.time())
    bad = f'X-SMTPAPI: {{"send_at": {now + 60}, "batch_id": "not-a-batch"}}\r\n'
    code, reply = send(smtp_stack, message(bad, body="bad batch"))
    assert (code, reply.split(":")[0]) == (554, "5.5.4 INVALID_BATCH_ID")
    header = f'X-SMTPAPI: {{"send_each_at": [{now + 2}, {now + 3}], "batch_id": "{batch}"}}\r\n'
    code, reply = send(
        smtp_stack, message(header, body="each at"), rcpts=["a@example.org", "b@example.org"]
    )
    assert code == 250 and reply.count(" for ") == 2, reply
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        got = [
            p.read_bytes() for p in smtp_stack.outbox.glob("*.eml") if b"each at" in p.read_bytes()
        ]
        if len(got) == 2:
            break
        time.sleep(0.1)
    assert len(got) == 2
    assert {message_from_bytes(g)["X-Kairos-Envelope-To"] for g in got} == {
        "a@example.org",
        "b@example.org",
    }
    assert all(message_from_bytes(g)["X-SMTPAPI"] is None for g in got)


def test_swaks(smtp_stack: Stack) -> None:
    swaks = shutil.which("swaks")
    if swaks is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI must run the swaks test: swaks is missing (scripts/system-deps.sh)")
        pytest.skip("swaks is not installed (apt-get install swaks)")
    due = int(time.time()) + 2
    run = subprocess.run(
        [
            swaks,
            "--server",
            f"127.0.0.1:{port(smtp_stack)}",
            "--auth",
            "PLAIN",
            "--auth-user",
            "swaks",
            "--auth-password",
            smtp_stack.api_key,
            "--from",
            "hello@example.com",
            "--to",
            "swaks@example.org",
            "--header",
            f"X-Scheduled-At: {due}",
            "--body",
            "sent by swaks",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "<-  250 2.0.0 Scheduled as" in run.stdout
    wait_eml(smtp_stack.outbox, "sent by swaks")
    bad = subprocess.run(
        [
            swaks,
            "--server",
            f"127.0.0.1:{port(smtp_stack)}",
            "--auth",
            "LOGIN",
            "--auth-user",
            "swaks",
            "--auth-password",
            smtp_stack.api_key,
            "--from",
            "hello@example.com",
            "--to",
            "swaks@example.org",
            "--header",
            "X-Scheduled-At: yesterday",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "554 5.5.4 SCHEDULED_AT_INVALID" in bad.stdout


def test_spoofing_is_refused_and_bcc_is_not_relayed(smtp_stack: Stack) -> None:
    code, reply = send(smtp_stack, message("From: ceo@not-mine.test\r\n", body="two froms"))
    assert (code, reply.split(":")[0]) == (554, "5.6.0 MULTIPLE_FROM")
    code, reply = send(smtp_stack, message("Sender: ceo@not-mine.test\r\n", body="sender"))
    assert (code, reply.split(":")[0]) == (553, "5.7.1 DOMAIN_NOT_OWNED")
    code, reply = send(
        smtp_stack,
        message("Bcc: hidden@example.org\r\n", body="with a bcc"),
        rcpts=["user@example.org", "hidden@example.org"],
    )
    assert code == 250, reply
    data = wait_eml(smtp_stack.outbox, "with a bcc")
    assert b"Bcc:" not in data and message_from_bytes(data)["Bcc"] is None
    envelope_to = message_from_bytes(data)["X-Kairos-Envelope-To"]
    assert envelope_to == "user@example.org, hidden@example.org"


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        (b"X-Scheduled-At:\r\n", "5.5.4 SCHEDULED_AT_INVALID"),
        (b"X-Scheduled-At:   \r\n", "5.5.4 SCHEDULED_AT_INVALID"),
        (b"X-Scheduled-At : 4000000000\r\n", "5.5.4 SCHEDULED_AT_INVALID"),
        (b"X-SMTPAPI: {}\r\n", "5.5.4 INVALID_SMTPAPI"),
        (b"X-SMTPAPI:\r\n", "5.5.4 INVALID_SMTPAPI"),
        (b"X-Idempotency-Key:\r\n", "5.5.4 INVALID_IDEMPOTENCY_KEY"),
        (b"X-Scheduled-At: 17\xff00000000\r\n", "5.5.4 SCHEDULED_AT_INVALID"),
        (b"X-Idempotency-Key: k\xe9y\r\n", "5.5.4 INVALID_IDEMPOTENCY_KEY"),
        (b'X-SMTPAPI: {"send_at": 4000000000, "batch_id": ["b"]}\r\n', "5.5.4 INVALID_BATCH_ID"),
    ],
)
def test_a_present_schedule_header_is_never_an_immediate_send(
    smtp_stack: Stack, headers: bytes, expected: str
) -> None:
    body = f"not sent {headers!r}"
    raw = (
        message(body=body).encode().replace(b"Subject: smtp test\r\n", b"Subject: x\r\n" + headers)
    )
    code, reply = send(smtp_stack, raw)
    assert (code, reply.split(":")[0]) == (554, expected), reply
    assert "Error: (" not in reply


def test_8bit_from_is_a_refusal_not_a_crash(smtp_stack: Stack) -> None:
    with smtplib.SMTP("127.0.0.1", port(smtp_stack), timeout=30) as client:
        client.login("anyone", smtp_stack.api_key)
        client.mail("hello@example.com")
        client.rcpt("user@example.org")
        code, reply = client.data(b"From: h\xe9llo@example.com\r\nSubject: x\r\n\r\nhi\r\n")
        assert (code, reply.decode().split(":")[0]) == (554, "5.6.0 INVALID_HEADER_VALUE")
        assert client.noop()[0] == 250


def test_a_thousand_recipients_get_a_reply_smtplib_reads(smtp_stack: Stack) -> None:
    due = int(time.time()) + 60 * 3600  # far enough that nothing is delivered during the test
    rcpts = [f"r{i}@example.org" for i in range(1000)]
    times = ",\r\n ".join(str(due + i) for i in range(1000))
    code, reply = send(
        smtp_stack, message(f'X-SMTPAPI: {{"send_each_at": [{times}]}}\r\n'), rcpts=rcpts
    )
    assert code == 250, reply
    assert reply.startswith("2.0.0 Scheduled 1000 messages as ") and len(reply) + 6 <= 512
    assert reply.endswith(f"for {due} (+999, the last for {due + 999})")
