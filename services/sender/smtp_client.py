"""An SMTP client connection for relaying (RFC 5321) that pipelines each transaction
(RFC 2920) when the relay offers PIPELINING.

Why not aiosmtplib, which the sender used before: it waits for the reply to every command
(MAIL, each RCPT, DATA, the content), one round trip and two system calls each, and its
protocol cannot read pipelined replies. Profiled under a burst (docs/bench.md), that lock-step
was the largest part of the sender's CPU. Here a transaction is two writes (the envelope
with DATA, then the content) and two reads, as Postfix's own client does; without
PIPELINING the same code goes in lock-step.

Connection set-up is the usual: greeting, EHLO (HELO when refused), STARTTLS or implicit
TLS, AUTH PLAIN or LOGIN. Every reply is read in order; a broken or slow connection raises
:class:`SmtpUnavailable`, a refusal is a :class:`Reply` for the caller to judge.
"""

from __future__ import annotations

import asyncio
import base64
import re
import ssl
from dataclasses import dataclass, field

#: A line of content starting with a dot gets a second one (RFC 5321 4.5.2).
_LEADING_DOT = re.compile(rb"(?m)^\.")
#: Characters an address in a command must not hold: they would end or bend the command.
_UNSAFE = re.compile(r"[\x00-\x1f\x7f<> ]")
MAX_REPLY_LINES = 100


class SmtpUnavailable(OSError):
    """The connection failed, broke, timed out or spoke no SMTP: transient, the message may
    go out on another attempt."""


@dataclass(frozen=True)
class Reply:
    """One SMTP reply: its code and its text (lines of a multi-line reply joined by LF)."""

    code: int
    text: str

    @property
    def ok(self) -> bool:
        return 200 <= self.code < 300


#: The end of a transaction whose every recipient was refused (their replies say why).
_NOBODY = Reply(554, "5.5.1 no valid recipients")


@dataclass(frozen=True)
class Outcome:
    """What the relay said to one transaction: ``final`` (the reply to the content, or the
    refusal that ended the transaction early) and each recipient's reply."""

    final: Reply
    recipients: dict[str, Reply] = field(default_factory=dict)

    @property
    def refused(self) -> dict[str, Reply]:
        return {a: r for a, r in self.recipients.items() if not r.ok}


@dataclass(frozen=True)
class RelayAddress:
    """Where and how to connect."""

    host: str
    port: int
    timeout: float = 30.0
    tls: bool = False
    starttls: bool = False
    tls_context: ssl.SSLContext | None = None
    username: str | None = None
    password: str | None = None
    local_hostname: str = "kairos"


class SmtpConnection:
    """One open, greeted, authenticated connection; :meth:`send` runs one transaction."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, timeout: float
    ) -> None:
        self.reader, self.writer, self.timeout = reader, writer, timeout
        self.extensions: dict[str, str] = {}
        self.broken = False

    @classmethod
    async def open(cls, relay: RelayAddress) -> SmtpConnection:
        """Connect, read the greeting, EHLO, STARTTLS and AUTH as configured."""
        # a context only where TLS is used: making one loads the system's CA certificates,
        # tens of milliseconds, which a pool of plain connections paid per connection
        context = relay.tls_context
        if context is None and (relay.tls or relay.starttls):
            context = ssl.create_default_context()
        try:
            async with asyncio.timeout(relay.timeout):
                reader, writer = await asyncio.open_connection(
                    relay.host,
                    relay.port,
                    ssl=context if relay.tls else None,
                    server_hostname=relay.host if relay.tls else None,
                    limit=1 << 20,
                )
                conn = cls(reader, writer, relay.timeout)
                try:
                    await conn._expect(await conn._reply(), 220, "greeting")
                    await conn._hello(relay.local_hostname)
                    if relay.starttls:
                        if "starttls" not in conn.extensions:
                            raise SmtpUnavailable("the relay does not offer STARTTLS")
                        await conn._expect(await conn._command(b"STARTTLS"), 220, "STARTTLS")
                        assert context is not None  # made above for STARTTLS
                        await writer.start_tls(context, server_hostname=relay.host)
                        await conn._hello(relay.local_hostname)
                    if relay.username and relay.password:
                        await conn._login(relay.username, relay.password)
                except BaseException:
                    conn.close()
                    raise
                return conn
        except (OSError, TimeoutError, ssl.SSLError, EOFError) as exc:
            if isinstance(exc, SmtpUnavailable):
                raise
            raise SmtpUnavailable(f"cannot connect to {relay.host}:{relay.port}: {exc!r}") from exc

    @property
    def pipelining(self) -> bool:
        return "pipelining" in self.extensions

    async def send(self, mail_from: str, rcpt_to: list[str], data: bytes) -> Outcome:
        """One transaction: MAIL, RCPT for each recipient, DATA and ``data`` (CRLF line
        endings; dot-stuffed here). Raises SmtpUnavailable when the connection fails; a relay's
        refusal is in the outcome, after which the connection is left ready (RSET)."""
        for address in (mail_from, *rcpt_to):
            if _UNSAFE.search(address):
                return Outcome(Reply(553, f"5.1.3 unusable address {address!r}"))
        params = self._mail_params(mail_from, rcpt_to, data)
        envelope = [
            b"MAIL FROM:<" + mail_from.encode() + b">" + params,
            *(b"RCPT TO:<" + r.encode() + b">" for r in rcpt_to),
            b"DATA",
        ]
        try:
            async with asyncio.timeout(self.timeout):
                if self.pipelining:
                    self.writer.write(b"".join(line + b"\r\n" for line in envelope))
                    replies = [await self._reply() for _ in envelope]
                else:
                    replies = await self._lock_step(envelope)
                return await self._finish(rcpt_to, replies, data)
        except (OSError, TimeoutError, EOFError, ValueError) as exc:
            self.broken = True
            if isinstance(exc, SmtpUnavailable):
                raise
            raise SmtpUnavailable(f"the relay connection failed: {exc!r}") from exc

    async def _lock_step(self, envelope: list[bytes]) -> list[Reply]:
        """The envelope one command at a time, stopping at the first refusal that ends it."""
        replies = [await self._command(envelope[0])]
        if not replies[0].ok:
            return replies
        for line in envelope[1:-1]:
            replies.append(await self._command(line))
        if any(r.ok for r in replies[1:]):
            replies.append(await self._command(envelope[-1]))
        return replies

    async def _finish(self, rcpt_to: list[str], replies: list[Reply], data: bytes) -> Outcome:
        mail = replies[0]
        recipients = dict(zip(rcpt_to, replies[1 : 1 + len(rcpt_to)], strict=False))
        data_reply = replies[1 + len(rcpt_to)] if len(replies) > 1 + len(rcpt_to) else None
        if data_reply is not None and data_reply.code == 354:
            if not mail.ok or not any(r.ok for r in recipients.values()):
                # RFC 2920 3.1: DATA accepted with nobody to send to: an empty message
                await self._command(b".")
                await self._reset()
                return Outcome(mail if not mail.ok else _NOBODY, recipients)
            self.writer.write(_stuffed(data))
            final = await self._reply()
            if not final.ok:
                await self._reset()
            return Outcome(final, recipients)
        await self._reset()
        if not mail.ok:
            return Outcome(mail, recipients)
        if not any(r.ok for r in recipients.values()):
            return Outcome(_NOBODY, recipients)
        assert data_reply is not None
        return Outcome(data_reply, recipients)

    async def quit(self) -> None:
        """QUIT and close (a relay that does not answer is closed all the same)."""
        try:
            async with asyncio.timeout(min(self.timeout, 5.0)):
                await self._command(b"QUIT")
        except (OSError, TimeoutError, EOFError, ValueError):
            pass
        finally:
            self.close()

    def close(self) -> None:
        self.broken = True
        self.writer.close()

    # -- protocol ------------------------------------------------------------------------

    async def _reply(self) -> Reply:
        """Read one (possibly multi-line) reply."""
        lines: list[str] = []
        code = 0
        for _ in range(MAX_REPLY_LINES):
            line = await self.reader.readline()
            if not line.endswith(b"\n"):
                raise SmtpUnavailable("the relay closed the connection")
            if len(line) < 4 or not line[:3].isdigit() or line[3:4] not in (b" ", b"-", b"\r"):
                raise SmtpUnavailable(f"not an SMTP reply: {line[:80]!r}")
            code = int(line[:3])
            lines.append(line[4:].rstrip(b"\r\n").decode("utf-8", "replace"))
            if line[3:4] != b"-":
                return Reply(code, "\n".join(lines))
        raise SmtpUnavailable("an SMTP reply of too many lines")

    async def _command(self, line: bytes) -> Reply:
        self.writer.write(line + b"\r\n")
        return await self._reply()

    async def _expect(self, reply: Reply, code: int, what: str) -> Reply:
        if reply.code != code:
            raise SmtpUnavailable(f"{what} refused: {reply.code} {reply.text[:200]}")
        return reply

    async def _hello(self, name: str) -> None:
        reply = await self._command(b"EHLO " + name.encode())
        if reply.code != 250:
            await self._expect(await self._command(b"HELO " + name.encode()), 250, "HELO")
            self.extensions = {}
            return
        extensions = {}
        for line in reply.text.split("\n")[1:]:
            keyword, _, value = line.strip().partition(" ")
            extensions[keyword.lower()] = value
        self.extensions = extensions

    async def _login(self, username: str, password: str) -> None:
        mechanisms = self.extensions.get("auth", "").upper().split()
        if "PLAIN" in mechanisms or "LOGIN" not in mechanisms:
            token = base64.b64encode(f"\0{username}\0{password}".encode()).decode()
            reply = await self._command(f"AUTH PLAIN {token}".encode())
        else:
            await self._expect(await self._command(b"AUTH LOGIN"), 334, "AUTH LOGIN")
            await self._expect(
                await self._command(base64.b64encode(username.encode())), 334, "AUTH LOGIN"
            )
            reply = await self._command(base64.b64encode(password.encode()))
        await self._expect(reply, 235, "AUTH")

    def _mail_params(self, mail_from: str, rcpt_to: list[str], data: bytes) -> bytes:
        params = b""
        if "size" in self.extensions:
            params += b" SIZE=" + str(len(data)).encode()
        if "8bitmime" in self.extensions and not data.isascii():
            params += b" BODY=8BITMIME"
        if "smtputf8" in self.extensions and not all(a.isascii() for a in (mail_from, *rcpt_to)):
            params += b" SMTPUTF8"
        return params

    async def _reset(self) -> None:
        """RSET after a refused transaction; a relay that will not is a broken connection."""
        if (await self._command(b"RSET")).code != 250:
            self.broken = True


def _stuffed(data: bytes) -> bytes:
    """``data`` as DATA content: dot-stuffed, ending with CRLF, then the final dot."""
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    return _LEADING_DOT.sub(b"..", data) + b".\r\n"
