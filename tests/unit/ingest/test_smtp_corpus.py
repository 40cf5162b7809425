"""A corpus of hostile SMTP sessions, each run with smtplib against a real aiosmtpd server
(Kairos's ``SubmissionSMTP``) on loopback, in-process with a fake reference view and
publisher. Every session must get a proper reply (its class and stable code, an enhanced
status code), never a 500 with exception text, and the connection must stay usable: a
valid message right after it on the same connection is accepted.

``tests/integration/test_smtp_hostile.py`` runs the same corpus against a real ingest."""

from __future__ import annotations

import asyncio
import re
import smtplib
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from kairos.settings import KairosSettings
from services.ingest.smtp import server_factory
from tests.unit.ingest.test_smtp_handler import NOW, FakePublisher, handler

pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")

#: a reply that shows internals or has no enhanced status code
LEAK = re.compile(r"Error: \(|Traceback|object has no attribute|Exception|Header object")
ENHANCED = re.compile(r"^[245]\.\d{1,3}\.\d{1,3} ")
VALID = b"From: hello@example.com\r\nTo: user@example.org\r\nSubject: ok\r\n\r\nfine\r\n"


def msg(headers: bytes = b"", sender: bytes = b"hello@example.com", body: bytes = b"hi") -> bytes:
    return (
        b"From: "
        + sender
        + b"\r\nTo: user@example.org\r\nSubject: corpus\r\n"
        + headers
        + b"\r\n"
        + body
        + b"\r\n"
    )


def fold(name: bytes, value: bytes, width: int = 70) -> bytes:
    """A header field folded at spaces into lines under 1000 bytes."""
    parts = value.split(b" ")
    lines, line = [], name + b":"
    for part in parts:
        if len(line) + len(part) + 1 > width:
            lines.append(line)
            line = b""
        line += b" " + part
    return b"\r\n".join([*lines, line]) + b"\r\n"


@dataclass(frozen=True)
class Case:
    """One session: MAIL FROM, RCPTs, DATA (``data`` None: the session ends at ``raw`` or
    the refused MAIL/RCPT) and the expected reply: its code and the stable code after the
    enhanced status (None for a 250)."""

    name: str
    data: bytes | None = None
    expect: tuple[int, str | None] = (250, None)
    mail_from: str = "hello@example.com"
    rcpts: tuple[str, ...] = ("user@example.org",)
    #: a raw command line sent instead of MAIL FROM (bytes smtplib would refuse to send)
    raw: bytes | None = None
    stage: str = "data"
    extra: dict[str, str] = field(default_factory=dict)


PAST, FAR = b"1000000000", b"4102444800"

CORPUS: list[Case] = [
    Case("valid", msg()),
    Case("valid 8-bit body", msg(body=b"caf\xe9 \xff\xfe")),
    Case("valid latin-1 subject", msg(b"X-Note: caf\xe9\r\n")),
    Case("bcc is accepted and stripped", msg(b"Bcc: hidden@example.org\r\n")),
    Case("second From", msg(b"From: ceo@other.test\r\n"), (554, "MULTIPLE_FROM")),
    Case(
        "From at another account's domain", msg(sender=b"ceo@other.test"), (553, "DOMAIN_NOT_OWNED")
    ),
    Case(
        "From at an unverified domain",
        msg(sender=b"x@unverified.test"),
        (553, "DOMAIN_NOT_VERIFIED"),
    ),
    Case("Sender at another domain", msg(b"Sender: ceo@other.test\r\n"), (553, "DOMAIN_NOT_OWNED")),
    Case(
        "From with two addresses",
        msg(sender=b"hello@example.com, ceo@other.test"),
        (553, "INVALID_ADDRESS"),
    ),
    Case(
        "From with a display-name trick",
        msg(sender=b"hello@example.com <ceo@other.test>"),
        (553, "INVALID_ADDRESS"),
    ),
    Case(
        "From with space before the colon",
        b"From : ceo@other.test\r\n" + msg(),
        (554, "INVALID_HEADER_NAME"),
    ),
    Case(
        "missing From", b"To: user@example.org\r\nSubject: x\r\n\r\nhi\r\n", (554, "MISSING_FROM")
    ),
    Case("empty message", b"", (554, "MISSING_FROM")),
    Case(
        "MAIL FROM another account's domain",
        None,
        (553, "DOMAIN_NOT_OWNED"),
        mail_from="ceo@other.test",
        stage="mail",
    ),
    Case(
        "MAIL FROM an unverified domain",
        None,
        (553, "DOMAIN_NOT_VERIFIED"),
        mail_from="x@unverified.test",
        stage="mail",
    ),
    Case(
        "MAIL FROM 8-bit",
        None,
        (500, "NON_ASCII_COMMAND"),
        raw=b"MAIL FROM:<h\xe9llo@example.com>",
        stage="raw",
    ),
    Case(
        "RCPT without domain", None, (553, "INVALID_RECIPIENT"), rcpts=("postmaster",), stage="rcpt"
    ),
    Case("X-Scheduled-At empty", msg(b"X-Scheduled-At:\r\n"), (554, "SCHEDULED_AT_INVALID")),
    Case("X-Scheduled-At blank", msg(b"X-Scheduled-At:    \r\n"), (554, "SCHEDULED_AT_INVALID")),
    Case(
        "X-Scheduled-At space before colon",
        msg(b"X-Scheduled-At : 4000000000\r\n"),
        (554, "SCHEDULED_AT_INVALID"),
    ),
    Case(
        "X-Scheduled-At twice",
        msg(b"X-Scheduled-At: " + FAR + b"\r\nX-Scheduled-At: 1\r\n"),
        (554, "SCHEDULED_AT_INVALID"),
    ),
    Case(
        "X-Scheduled-At 8-bit", msg(b"X-Scheduled-At: 20\xff30\r\n"), (554, "SCHEDULED_AT_INVALID")
    ),
    Case(
        "X-Scheduled-At not a date",
        msg(b"X-Scheduled-At: 2030-02-30T00:00:00Z\r\n"),
        (554, "SCHEDULED_AT_INVALID"),
    ),
    Case(
        "X-Scheduled-At no offset",
        msg(b"X-Scheduled-At: 2030-01-01T00:00:00\r\n"),
        (554, "SCHEDULED_AT_NO_OFFSET"),
    ),
    Case(
        "X-Scheduled-At in the past",
        msg(b"X-Scheduled-At: " + PAST + b"\r\n"),
        (554, "SCHEDULED_AT_IN_PAST"),
    ),
    Case(
        "X-Scheduled-At too far",
        msg(b"X-Scheduled-At: " + FAR + b"\r\n"),
        (554, "SCHEDULED_AT_TOO_FAR"),
    ),
    Case(
        "X-Scheduled-At huge number",
        msg(b"X-Scheduled-At: " + b"9" * 40 + b"\r\n"),
        (554, "SCHEDULED_AT_INVALID"),
    ),
    Case("X-SMTPAPI {}", msg(b"X-SMTPAPI: {}\r\n"), (554, "INVALID_SMTPAPI")),
    Case("X-SMTPAPI empty", msg(b"X-SMTPAPI:\r\n"), (554, "INVALID_SMTPAPI")),
    Case(
        "X-SMTPAPI space before colon",
        msg(b'X-SMTPAPI : {"send_at": 4000000000}\r\n'),
        (554, "INVALID_SMTPAPI"),
    ),
    Case("X-SMTPAPI not JSON", msg(b"X-SMTPAPI: {send_at: 1}\r\n"), (554, "INVALID_SMTPAPI")),
    Case("X-SMTPAPI a list", msg(b"X-SMTPAPI: [1]\r\n"), (554, "INVALID_SMTPAPI")),
    Case(
        "X-SMTPAPI batch_id a list",
        msg(b'X-SMTPAPI: {"send_at": ' + FAR + b', "batch_id": ["x"]}\r\n'),
        (554, "INVALID_BATCH_ID"),
    ),
    Case(
        "X-SMTPAPI batch_id a number",
        msg(b'X-SMTPAPI: {"send_at": ' + PAST + b', "batch_id": 1}\r\n'),
        (554, "INVALID_BATCH_ID"),
    ),
    Case(
        "X-SMTPAPI send_at a string",
        msg(b'X-SMTPAPI: {"send_at": "tomorrow"}\r\n'),
        (554, "SCHEDULED_AT_INVALID"),
    ),
    Case(
        "X-SMTPAPI send_at true",
        msg(b'X-SMTPAPI: {"send_at": true}\r\n'),
        (554, "SCHEDULED_AT_INVALID"),
    ),
    Case(
        "X-SMTPAPI send_at an object",
        msg(b'X-SMTPAPI: {"send_at": {"x": 1}}\r\n'),
        (554, "SCHEDULED_AT_INVALID"),
    ),
    Case(
        "X-SMTPAPI send_each_at a string",
        msg(b'X-SMTPAPI: {"send_each_at": "1"}\r\n'),
        (554, "INVALID_SMTPAPI"),
    ),
    Case(
        "X-SMTPAPI send_each_at length mismatch",
        msg(b'X-SMTPAPI: {"send_each_at": [1, 2, 3]}\r\n'),
        (554, "INVALID_SMTPAPI"),
        rcpts=("a@example.org", "b@example.org"),
    ),
    Case(
        "X-SMTPAPI send_each_at with null",
        msg(b'X-SMTPAPI: {"send_each_at": [null]}\r\n'),
        (554, "SCHEDULED_AT_INVALID"),
    ),
    Case(
        "X-SMTPAPI to (recipients)",
        msg(b'X-SMTPAPI: {"to": ["x@evil.test"], "send_at": 1}\r\n'),
        (554, "INVALID_SMTPAPI"),
    ),
    Case(
        "X-SMTPAPI deep nesting",
        msg(fold(b"X-SMTPAPI", b" ".join([b"["] * 3000 + [b"]"] * 3000))),
        (554, "INVALID_SMTPAPI"),
    ),
    Case("X-SMTPAPI 8-bit", msg(b'X-SMTPAPI: {"send_at": "\xff"}\r\n'), (554, "INVALID_SMTPAPI")),
    Case(
        "X-Idempotency-Key empty", msg(b"X-Idempotency-Key:\r\n"), (554, "INVALID_IDEMPOTENCY_KEY")
    ),
    Case(
        "X-Idempotency-Key 8-bit",
        msg(b"X-Idempotency-Key: k\xe9y\r\n"),
        (554, "INVALID_IDEMPOTENCY_KEY"),
    ),
    Case(
        "X-Idempotency-Key too long",
        msg(fold(b"X-Idempotency-Key", b" ".join([b"k" * 60] * 5))),
        (554, "INVALID_IDEMPOTENCY_KEY"),
    ),
    Case("From 8-bit", msg(sender=b"h\xe9llo@example.com"), (554, "INVALID_HEADER_VALUE")),
    Case(
        "header injection by bare LF",
        msg(b"Subject: x\nBcc: evil@evil.test\r\n"),
        (554, "INVALID_HEADER_VALUE"),
    ),
    Case(
        "header injection by bare CR",
        msg(b"Subject: x\rFrom: ceo@other.test\r\n"),
        (554, "INVALID_HEADER_VALUE"),
    ),
    Case("NUL in a header", msg(b"Subject: a\x00b\r\n"), (554, "INVALID_HEADER_VALUE")),
    Case("NUL in a header name", msg(b"X-A\x00B: 1\r\n"), (554, "INVALID_HEADER_NAME")),
    Case("NUL in the body", msg(body=b"a\x00b"), (554, "INVALID_BODY")),
    Case(
        "bare LF in the body (smuggling)",
        msg(body=b"a\n.\nMAIL FROM:<x@evil.test>"),
        (554, "INVALID_BODY"),
    ),
    Case("8-bit header name", msg(b"X-\xc3\xa9: 1\r\n"), (554, "INVALID_HEADER_NAME")),
    Case("not a header line", b"hello there\r\n" + msg(), (554, "INVALID_HEADER_NAME")),
    Case("continuation first", b" folded\r\n" + msg(), (554, "INVALID_HEADER_NAME")),
    Case("duplicate Subject", msg(b"Subject: again\r\n"), (554, "DUPLICATE_HEADER")),
    Case(
        "a line over 1000 bytes", msg(b"X-Long: " + b"a" * 2000 + b"\r\n"), (500, "LINE_TOO_LONG")
    ),
    Case(
        "a header block over 1 MiB",
        msg(b"X-Big: a" + (b"\r\n " + b"b" * 900) * 1200 + b"\r\n"),
        (552, "HEADERS_TOO_LARGE"),
    ),
    Case("more than 1000 fields", msg(b"X-A: 1\r\n" * 1001), (552, "HEADERS_TOO_LARGE")),
]


def expect_reply(case: Case, code: int, text: str) -> None:
    assert not LEAK.search(text), (case.name, code, text)
    assert len(text) + 6 <= 512, case.name
    assert code == case.expect[0], (case.name, code, text)
    if code != 250:
        assert ENHANCED.match(text), (case.name, text)
        assert text.split(" ")[0][0] == str(code)[0], (case.name, text)
        assert text.split(" ")[1] == f"{case.expect[1]}:", (case.name, text)


def run_case(host: str, port: int, api_key: str, case: Case) -> None:
    """Run one session and check its reply, then a valid message on the same connection."""
    with smtplib.SMTP(host, port, timeout=60) as client:
        client.login("corpus", api_key)
        if case.stage == "raw":
            assert case.raw is not None
            client.send(case.raw + b"\r\n")
            code, reply = client.getreply()
            expect_reply(case, code, reply.decode())
        else:
            code, reply = client.mail(case.mail_from)
            if case.stage == "mail":
                expect_reply(case, code, reply.decode())
            else:
                assert code == 250, (case.name, code, reply)
                for rcpt in case.rcpts:
                    code, reply = client.rcpt(rcpt)
                    if case.stage == "rcpt":
                        expect_reply(case, code, reply.decode())
                        break
                    assert code == 250, (case.name, code, reply)
                if case.stage == "data":
                    assert case.data is not None
                    code, reply = client.data(case.data)
                    expect_reply(case, code, reply.decode())
        client.rset()
        assert client.noop()[0] == 250, case.name
        client.mail("hello@example.com")
        client.rcpt("user@example.org")
        code, reply = client.data(VALID)
        assert code == 250, (case.name, "the connection is not usable after it", code, reply)


API_KEY = "kai_good"


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, int]]:
    """Kairos's SMTP server with fakes, on its own event loop in a thread."""
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    holder: dict[str, object] = {}

    async def start() -> None:
        settings = KairosSettings(smtp_host="127.0.0.1", smtp_port=0)
        srv = await loop.create_server(
            server_factory(settings, handler(FakePublisher())), "127.0.0.1", 0
        )
        holder["server"] = srv
        holder["port"] = srv.sockets[0].getsockname()[1]
        ready.set()

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(start(), loop).result(10)
    ready.wait(10)
    try:
        yield "127.0.0.1", int(str(holder["port"]))
    finally:

        async def stop() -> None:
            srv = holder["server"]
            srv.close()  # type: ignore[attr-defined]

        asyncio.run_coroutine_threadsafe(stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


@pytest.mark.parametrize("case", CORPUS, ids=[c.name for c in CORPUS])
def test_hostile_session(server: tuple[str, int], case: Case) -> None:
    run_case(*server, API_KEY, case)


def test_corpus_times_are_fixed_against_the_fake_clock() -> None:
    # the corpus's past and far times hold for the fake clock and for any real clock until 2100
    assert int(PAST) < NOW < int(FAR) - 30 * 86400
