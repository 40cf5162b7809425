"""Delivery to the configured SMTP relay over a bounded pool of connections (aiosmtplib)."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from dataclasses import dataclass

import aiosmtplib

from kairos.settings import KairosSettings


@dataclass(frozen=True)
class RelayReply:
    """The relay's answer to one message: a code, the enhanced status if any, and text."""

    code: int
    text: str
    enhanced: str | None = None

    @property
    def permanent(self) -> bool:
        return 500 <= self.code < 600

    @property
    def ok(self) -> bool:
        return 200 <= self.code < 300


def _split_enhanced(text: str) -> tuple[str | None, str]:
    head, _, rest = text.partition(" ")
    parts = head.split(".")
    if len(parts) == 3 and all(p.isdigit() for p in parts) and parts[0] in "245":
        return head, rest
    return None, text


class RelayPool:
    """At most ``size`` open connections to the relay; each send borrows one."""

    def __init__(self, settings: KairosSettings, size: int = 8) -> None:
        self.settings = settings
        self._idle: asyncio.Queue[aiosmtplib.SMTP] = asyncio.Queue()
        self._slots = asyncio.Semaphore(size)

    async def _connect(self) -> aiosmtplib.SMTP:
        s = self.settings
        client = aiosmtplib.SMTP(
            hostname=s.relay_host,
            port=s.relay_port,
            timeout=s.relay_timeout,
            use_tls=s.relay_tls,
            start_tls=s.relay_starttls,
            tls_context=ssl.create_default_context() if (s.relay_tls or s.relay_starttls) else None,
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
                client = self._idle.get_nowait() if not self._idle.empty() else None
                if client is None or not client.is_connected:
                    client = await self._connect()
                errors, text = await client.sendmail(mail_from, rcpt_to, data)
                self._idle.put_nowait(client)
                client = None
                if errors and len(errors) == len(rcpt_to):
                    code, msg = next(iter(errors.values()))
                    enhanced, rest = _split_enhanced(msg)
                    return RelayReply(code, rest, enhanced)
                enhanced, rest = _split_enhanced(text)
                return RelayReply(250, rest, enhanced)
            except aiosmtplib.SMTPRecipientsRefused as exc:
                first = exc.recipients[0]
                enhanced, rest = _split_enhanced(first.message)
                return RelayReply(first.code, rest, enhanced)
            except aiosmtplib.SMTPResponseException as exc:
                enhanced, rest = _split_enhanced(exc.message)
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
