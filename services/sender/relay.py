"""Delivery to the configured SMTP relay over a bounded pool of connections (aiosmtplib)."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from dataclasses import dataclass

import aiosmtplib

from kairos.settings import KairosSettings


@dataclass(frozen=True)
class Refusal:
    """One recipient the relay refused."""

    address: str
    code: int
    enhanced: str | None
    text: str


@dataclass(frozen=True)
class RelayReply:
    """The relay's answer to one message: a code, the enhanced status if any, text, and the
    recipients it refused (when it accepted the message for the others, ``code`` is 250)."""

    code: int
    text: str
    enhanced: str | None = None
    refused: tuple[Refusal, ...] = ()


def split_enhanced(text: str) -> tuple[str | None, str]:
    """``("5.1.1", "User unknown")`` from ``"5.1.1 User unknown"``; ``(None, text)`` if none."""
    head, _, rest = text.strip().partition(" ")
    parts = head.split(".")
    if len(parts) == 3 and all(p.isdigit() for p in parts) and parts[0] in ("2", "4", "5"):
        return head, rest
    return None, text.strip()


def _refusal(address: str, code: int, message: str) -> Refusal:
    enhanced, text = split_enhanced(message)
    return Refusal(address, code, enhanced, text)


def reply_for_all_refused(refused: tuple[Refusal, ...]) -> RelayReply:
    """Every recipient refused: a transient refusal wins (another attempt may succeed)."""
    transient = [r for r in refused if 400 <= r.code < 500]
    first = transient[0] if transient else refused[0]
    return RelayReply(first.code, first.text, first.enhanced, refused)


class RelayPool:
    """At most ``size`` open connections to the relay; each send borrows one."""

    def __init__(self, settings: KairosSettings) -> None:
        self.settings = settings
        self._idle: asyncio.Queue[aiosmtplib.SMTP] = asyncio.Queue()
        self._slots = asyncio.Semaphore(settings.relay_pool_size)

    async def _connect(self) -> aiosmtplib.SMTP:
        s = self.settings
        tls = s.relay_tls or s.relay_starttls
        client = aiosmtplib.SMTP(
            hostname=s.relay_host,
            port=s.relay_port,
            timeout=s.relay_timeout,
            use_tls=s.relay_tls,
            start_tls=s.relay_starttls,
            validate_certs=s.relay_verify_tls,
            tls_context=ssl.create_default_context() if tls and s.relay_verify_tls else None,
        )
        await client.connect()
        if s.relay_username and s.relay_password:
            await client.login(s.relay_username, s.relay_password.get_secret_value())
        return client

    async def send(self, mail_from: str, rcpt_to: list[str], data: bytes) -> RelayReply:
        """Relay one message. Returns the relay's reply (2xx, 4xx or 5xx); a connection
        failure or timeout is returned as a 421 transient reply, never raised."""
        async with self._slots:
            client: aiosmtplib.SMTP | None = None
            try:
                # an idle connection ended its last transaction with a 250 (any other answer
                # closes it), so it is ready for the next MAIL FROM without an RSET
                client = None if self._idle.empty() else self._idle.get_nowait()
                if client is None or not client.is_connected:
                    client = await self._connect()
                errors, text = await client.sendmail(mail_from, rcpt_to, data)
                self._idle.put_nowait(client)
                client = None
                refused = tuple(_refusal(a, r.code, r.message) for a, r in errors.items())
                enhanced, rest = split_enhanced(text)
                return RelayReply(250, rest, enhanced, refused)
            except aiosmtplib.SMTPRecipientsRefused as exc:
                refused = tuple(_refusal(r.recipient, r.code, r.message) for r in exc.recipients)
                return reply_for_all_refused(refused)
            except aiosmtplib.SMTPResponseException as exc:
                enhanced, rest = split_enhanced(exc.message)
                return RelayReply(exc.code, rest, enhanced)
            except (TimeoutError, aiosmtplib.SMTPException, OSError) as exc:
                return RelayReply(421, f"relay unavailable: {exc}", "4.4.1")
            finally:
                if client is not None:
                    with contextlib.suppress(Exception):  # closing a broken connection
                        client.close()

    async def close(self) -> None:
        while not self._idle.empty():
            client = self._idle.get_nowait()
            try:
                await client.quit()
            except (aiosmtplib.SMTPException, OSError):
                client.close()
