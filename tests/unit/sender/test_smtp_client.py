"""The sender's SMTP client against real servers on loopback: a scripted one (to see exactly
what arrives in which read, and to misbehave) and aiosmtpd (STARTTLS, implicit TLS, AUTH).
The Postfix relay tests (tests/integration/test_postfix.py, test_sender.py) drive it against
a real MTA."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from kairos.ports import free_port
from services.sender.smtp_client import RelayAddress, SmtpConnection, SmtpUnavailable

MESSAGE = b"From: a@x.test\r\nTo: b@y.test\r\nSubject: s\r\n\r\n.leading dot\r\nbody\r\n"


@dataclass
class Scripted:
    """An SMTP server that answers each command by ``answer`` and records every read."""

    extensions: list[str] = field(default_factory=lambda: ["PIPELINING", "SIZE 1000000"])
    answer: Callable[[bytes], bytes | None] = lambda line: None
    reads: list[bytes] = field(default_factory=list)
    messages: list[bytes] = field(default_factory=list)
    port: int = 0

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 scripted ESMTP\r\n")
        in_data, content, pending = False, b"", b""
        while data := await reader.read(65536):
            self.reads.append(data)
            pending += data
            out = b""
            while True:
                if in_data:
                    if pending.startswith(b".\r\n"):  # an empty message
                        content, pending = b"", pending[3:]
                    else:
                        end = pending.find(b"\r\n.\r\n")
                        if end < 0:
                            break
                        content, pending = pending[: end + 2], pending[end + 5 :]
                    self.messages.append(content)
                    in_data = False
                    out += self.answer(b".") or b"250 2.0.0 queued\r\n"
                    continue
                line, sep, rest = pending.partition(b"\r\n")
                if not sep:
                    break
                pending = rest
                out += self.reply(line)
                if line == b"DATA" and out.endswith(b"354 go\r\n"):
                    in_data = True
            if out:
                writer.write(out)
                await writer.drain()
        writer.close()

    def reply(self, line: bytes) -> bytes:
        custom = self.answer(line)
        if custom is not None:
            return custom
        verb = line.split(b" ", 1)[0].upper()
        if verb == b"EHLO":
            lines = ["scripted", *self.extensions]
            return "".join(
                f"250{'-' if i < len(lines) - 1 else ' '}{x}\r\n" for i, x in enumerate(lines)
            ).encode()
        if verb == b"DATA":
            return b"354 go\r\n"
        if verb == b"QUIT":
            return b"221 bye\r\n"
        return b"250 2.1.0 ok\r\n"


@pytest.fixture
async def scripted() -> AsyncIterator[Scripted]:
    server = Scripted()
    srv = await asyncio.start_server(server.serve, "127.0.0.1", 0)
    server.port = srv.sockets[0].getsockname()[1]
    async with srv:
        yield server
        srv.close()


async def connect(server: Scripted, timeout: float = 5.0) -> SmtpConnection:
    return await SmtpConnection.open(RelayAddress("127.0.0.1", server.port, timeout=timeout))


async def test_a_transaction_is_two_writes_when_the_relay_pipelines(scripted: Scripted) -> None:
    conn = await connect(scripted)
    before = len(scripted.reads)
    outcome = await conn.send("a@x.test", ["b@y.test", "c@y.test"], MESSAGE)
    await conn.quit()
    assert outcome.final.ok and outcome.refused == {}
    envelope = scripted.reads[before]
    assert envelope == (
        b"MAIL FROM:<a@x.test> SIZE=" + str(len(MESSAGE)).encode() + b"\r\n"
        b"RCPT TO:<b@y.test>\r\nRCPT TO:<c@y.test>\r\nDATA\r\n"
    )
    assert scripted.messages == [MESSAGE.replace(b"\r\n.leading", b"\r\n..leading")]


async def test_a_plain_connection_makes_no_tls_context(
    scripted: Scripted, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Making a TLS context loads the CA certificates (tens of ms); a pool of plain
    connections paid that per connection, a fifth of the sender's CPU in a burst."""
    made: list[object] = []
    real = ssl.create_default_context
    monkeypatch.setattr(ssl, "create_default_context", lambda *a, **k: made.append(1) or real())
    conn = await connect(scripted)
    await conn.quit()
    assert made == []


async def test_without_pipelining_each_command_waits_for_its_reply(scripted: Scripted) -> None:
    scripted.extensions = []
    conn = await connect(scripted)
    before = len(scripted.reads)
    outcome = await conn.send("a@x.test", ["b@y.test"], MESSAGE)
    assert outcome.final.ok
    assert scripted.reads[before : before + 3] == [
        b"MAIL FROM:<a@x.test>\r\n",
        b"RCPT TO:<b@y.test>\r\n",
        b"DATA\r\n",
    ]
    await conn.quit()


@pytest.mark.parametrize("pipelining", [True, False])
async def test_refused_recipients_are_reported_and_the_rest_get_it(
    scripted: Scripted, pipelining: bool
) -> None:
    scripted.extensions = ["PIPELINING"] if pipelining else []
    scripted.answer = lambda line: (
        b"550 5.1.1 no such user\r\n" if line == b"RCPT TO:<gone@y.test>" else None
    )
    conn = await connect(scripted)
    outcome = await conn.send("a@x.test", ["gone@y.test", "b@y.test"], MESSAGE)
    assert outcome.final.ok
    assert {a: r.code for a, r in outcome.refused.items()} == {"gone@y.test": 550}
    assert len(scripted.messages) == 1
    # the connection is still good for the next transaction
    assert (await conn.send("a@x.test", ["b@y.test"], MESSAGE)).final.ok
    await conn.quit()


async def test_every_recipient_refused_sends_nothing_even_if_data_was_accepted(
    scripted: Scripted,
) -> None:
    """RFC 2920 3.1: with the envelope pipelined the relay may accept DATA though it refused
    every recipient; the client then sends an empty message (a lone dot) and resets."""
    scripted.answer = lambda line: b"450 4.2.0 busy\r\n" if line.startswith(b"RCPT") else None
    conn = await connect(scripted)
    outcome = await conn.send("a@x.test", ["b@y.test", "c@y.test"], MESSAGE)
    assert not outcome.final.ok
    assert {r.code for r in outcome.refused.values()} == {450}
    assert scripted.messages == [b""]
    assert any(b"RSET" in r for r in scripted.reads)
    await conn.quit()


async def test_a_refused_sender_ends_the_transaction(scripted: Scripted) -> None:
    scripted.answer = lambda line: (
        b"553 5.7.1 not yours\r\n"
        if line.startswith(b"MAIL")
        else b"503 5.5.1 need MAIL\r\n"
        if line.startswith((b"RCPT", b"DATA"))
        else None
    )
    conn = await connect(scripted)
    outcome = await conn.send("a@x.test", ["b@y.test"], MESSAGE)
    assert (outcome.final.code, outcome.final.text) == (553, "5.7.1 not yours")
    assert scripted.messages == []
    await conn.quit()


async def test_a_refusal_of_the_content_is_its_reply(scripted: Scripted) -> None:
    scripted.answer = lambda line: b"552 5.3.4 too big\r\n" if line == b"." else None
    conn = await connect(scripted)
    outcome = await conn.send("a@x.test", ["b@y.test"], MESSAGE)
    assert outcome.final.code == 552 and not conn.broken
    await conn.quit()


async def test_multi_line_replies_are_read_whole(scripted: Scripted) -> None:
    scripted.answer = lambda line: (
        b"451-4.3.0 first line\r\n451-second\r\n451 4.3.0 third\r\n" if line == b"." else None
    )
    conn = await connect(scripted)
    outcome = await conn.send("a@x.test", ["b@y.test"], MESSAGE)
    assert outcome.final.code == 451
    assert outcome.final.text == "4.3.0 first line\nsecond\n4.3.0 third"
    await conn.quit()


async def test_a_relay_that_stops_answering_is_unavailable(scripted: Scripted) -> None:
    scripted.answer = lambda line: b"" if line.startswith(b"MAIL") else None  # never answers
    conn = await connect(scripted, timeout=0.5)
    with pytest.raises(SmtpUnavailable):
        await conn.send("a@x.test", ["b@y.test"], MESSAGE)
    assert conn.broken
    conn.close()


async def test_nonsense_from_the_relay_is_unavailable(scripted: Scripted) -> None:
    scripted.answer = lambda line: b"hello there\r\n" if line.startswith(b"MAIL") else None
    conn = await connect(scripted)
    with pytest.raises(SmtpUnavailable, match="not an SMTP reply"):
        await conn.send("a@x.test", ["b@y.test"], MESSAGE)
    conn.close()


async def test_nothing_listening_is_unavailable() -> None:
    with pytest.raises(SmtpUnavailable, match="cannot connect"):
        await SmtpConnection.open(RelayAddress("127.0.0.1", free_port(), timeout=2))


async def test_an_address_that_would_bend_the_command_is_refused_unsent(
    scripted: Scripted,
) -> None:
    conn = await connect(scripted)
    before = len(scripted.reads)
    outcome = await conn.send("a@x.test", ["b@y.test>\r\nRCPT TO:<evil@z.test"], MESSAGE)
    assert outcome.final.code == 553
    assert len(scripted.reads) == before
    await conn.quit()


# -- TLS and AUTH, against aiosmtpd -----------------------------------------------------------


class Recorder:
    def __init__(self) -> None:
        self.envelopes: list[Any] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.envelopes.append(envelope)
        return "250 2.0.0 OK"


def authenticator(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> Any:
    ok = isinstance(data, LoginPassword) and (data.login, data.password) == (b"u", b"p")
    return AuthResult(success=ok, handled=False)


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def server_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    return context


def client_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


@pytest.mark.parametrize("implicit", [False, True], ids=["starttls", "implicit tls"])
async def test_tls_and_auth(ca: trustme.CA, implicit: bool) -> None:
    recorder = Recorder()
    port = free_port()
    tls = server_context(ca)
    controller = Controller(
        recorder,
        hostname="127.0.0.1",
        port=port,
        ssl_context=tls if implicit else None,
        tls_context=None if implicit else tls,
        require_starttls=not implicit,
        # aiosmtpd knows only STARTTLS as encryption; its implicit TLS is encrypted all the same
        auth_require_tls=not implicit,
        authenticator=authenticator,
        auth_required=True,
    )
    controller.start()
    try:
        relay = RelayAddress(
            "127.0.0.1",
            port,
            timeout=10,
            tls=implicit,
            starttls=not implicit,
            tls_context=client_context(ca),
            username="u",
            password="p",
        )
        conn = await SmtpConnection.open(relay)
        outcome = await conn.send("a@x.test", ["b@y.test"], MESSAGE)
        await conn.quit()
        assert outcome.final.ok
        [envelope] = recorder.envelopes
        assert envelope.mail_from == "a@x.test" and envelope.rcpt_tos == ["b@y.test"]
        assert envelope.original_content == MESSAGE
        with pytest.raises(SmtpUnavailable, match="AUTH refused"):
            await SmtpConnection.open(RelayAddress(**{**relay.__dict__, "password": "wrong"}))
        with pytest.raises(SmtpUnavailable):  # an untrusted certificate
            await SmtpConnection.open(RelayAddress(**{**relay.__dict__, "tls_context": None}))
    finally:
        controller.stop()
