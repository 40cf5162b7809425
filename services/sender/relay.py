"""Delivery to the configured SMTP relay over a bounded pool of connections, each transaction
pipelined when the relay offers it (:mod:`services.sender.smtp_client`)."""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass

from kairos.metrics import RELAY_CONNECTIONS, SMTP_REPLIES
from kairos.settings import KairosSettings
from services.sender.smtp_client import (
    Outcome,
    RelayAddress,
    SmtpConnection,
    SmtpUnavailable,
)


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


def reply_for_all_refused(refused: tuple[Refusal, ...]) -> RelayReply:
    """Every recipient refused: a transient refusal wins (another attempt may succeed)."""
    transient = [r for r in refused if 400 <= r.code < 500]
    first = transient[0] if transient else refused[0]
    return RelayReply(first.code, first.text, first.enhanced, refused)


def relay_reply(outcome: Outcome) -> RelayReply:
    """The relay's answer to one message, as the outcome policy reads it."""
    refused = tuple(
        Refusal(address, reply.code, *split_enhanced(reply.text))
        for address, reply in outcome.refused.items()
    )
    final = outcome.final
    if refused and len(refused) == len(outcome.recipients) and not final.ok:
        return reply_for_all_refused(refused)  # a transient refusal wins over a permanent one
    enhanced, rest = split_enhanced(final.text)
    return RelayReply(final.code, rest, enhanced, refused)


BUSY = RELAY_CONNECTIONS.labels("busy")
IDLE = RELAY_CONNECTIONS.labels("idle")


class RelayPool:
    """At most ``size`` open connections to the relay; each send borrows one."""

    def __init__(self, settings: KairosSettings) -> None:
        s = settings
        tls = s.relay_tls or s.relay_starttls
        context = None
        if tls:
            context = ssl.create_default_context()
            if not s.relay_verify_tls:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
        self.relay = RelayAddress(
            host=s.relay_host,
            port=s.relay_port,
            timeout=s.relay_timeout,
            tls=s.relay_tls,
            starttls=s.relay_starttls,
            tls_context=context,
            username=s.relay_username,
            password=s.relay_password.get_secret_value() if s.relay_password else None,
        )
        self._idle: list[SmtpConnection] = []
        self._slots = asyncio.Semaphore(s.relay_pool_size)

    async def send(self, mail_from: str, rcpt_to: list[str], data: bytes) -> RelayReply:
        """Relay one message. Returns the relay's reply (2xx, 4xx or 5xx); a connection
        failure or timeout is returned as a 421 transient reply, never raised."""
        async with self._slots:
            conn = self._idle.pop() if self._idle else None
            BUSY.inc()
            try:
                if conn is None:
                    conn = await SmtpConnection.open(self.relay)
                outcome = await conn.send(mail_from, rcpt_to, data)
            except SmtpUnavailable as exc:
                if conn is not None:
                    conn.close()
                SMTP_REPLIES.labels("unavailable").inc()
                IDLE.set(len(self._idle))
                return RelayReply(421, f"relay unavailable: {exc}", "4.4.1")
            finally:
                BUSY.dec()
            if conn.broken:
                conn.close()
            else:
                self._idle.append(conn)
            IDLE.set(len(self._idle))
            SMTP_REPLIES.labels(f"{outcome.final.code // 100}xx").inc()
            return relay_reply(outcome)

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        IDLE.set(0)
        await asyncio.gather(*(conn.quit() for conn in idle))
