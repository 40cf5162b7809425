"""SMTP submission (aiosmtpd), on the ingest service's event loop.

AUTH PLAIN/LOGIN with an API key as the password; ``X-Scheduled-At`` (same formats and rules as
``scheduledAt``), ``X-Idempotency-Key``, and SendGrid's ``X-SMTPAPI`` (``send_at``,
``send_each_at``, ``batch_id``). Every violation is answered in the DATA reply with a code and
an enhanced status; the 250 names the message id(s). Internal headers are not relayed.
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import ssl
import uuid
from dataclasses import dataclass
from email.parser import BytesHeaderParser
from email.policy import compat32
from typing import Any

import orjson
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

from kairos.clock import Clock, to_datetime
from kairos.logging import get_logger
from kairos.metrics import REJECTED, count
from kairos.settings import KairosSettings
from schemas.events import MessageContent, Scheduled
from schemas.reference import AccountState
from services.ingest.checks import HARD_CAP_BYTES, check_account, check_message, horizon_of
from services.ingest.compose import SubmitError
from services.ingest.http import AccountLookup
from services.ingest.idempotency import MAX_KEY_LENGTH, IdempotencyLog
from services.ingest.publish import Publisher, PublishError
from services.ingest.scanners import Scanning
from services.ingest.schedule import MAX_HORIZON_SECONDS, ScheduleError, check_window, parse_time

log = get_logger("kairos.ingest.smtp")

#: SendGrid's horizon for its SMTP API.
SMTPAPI_HORIZON = 72 * 3600
INTERNAL = (b"x-scheduled-at", b"x-idempotency-key", b"x-smtpapi")

#: Error code -> (SMTP reply code, enhanced status). One table for every SMTP rejection.
SMTP_CODES: dict[str, tuple[int, str]] = {
    "UNAUTHORIZED": (530, "5.7.0"),
    "ACCOUNT_DISABLED": (550, "5.7.1"),
    "DOMAIN_NOT_OWNED": (550, "5.7.1"),
    "DOMAIN_NOT_VERIFIED": (550, "5.7.1"),
    "RECIPIENT_SUPPRESSED": (550, "5.7.1"),
    "SCHEDULING_NOT_ALLOWED": (550, "5.7.1"),
    "TOO_MANY_RECIPIENTS": (554, "5.5.3"),
    "MESSAGE_TOO_LARGE": (552, "5.3.4"),
    "IDEMPOTENCY_BODY_MISMATCH": (554, "5.5.0"),
    "IDEMPOTENCY_IN_FLIGHT": (451, "4.5.0"),
    "INVALID_IDEMPOTENCY_KEY": (554, "5.5.4"),
    "INVALID_SMTPAPI": (554, "5.5.4"),
    "INVALID_BATCH_ID": (554, "5.5.4"),
    "MESSAGE_INFECTED": (554, "5.7.1"),
    "MESSAGE_SPAM": (550, "5.7.1"),
    "SCANNER_UNAVAILABLE": (451, "4.7.0"),
    "BROKER_UNAVAILABLE": (451, "4.3.0"),
}


def smtp_reply(code: str, message: str) -> str:
    """The SMTP reply for a rejection with error ``code`` (schedule errors: 554 5.5.4)."""
    smtp, enhanced = SMTP_CODES.get(
        code, (554, "5.5.4" if code.startswith("SCHEDULED_AT") else "5.6.0")
    )
    REJECTED.labels("smtp", code).inc()
    ascii_text = message.replace("±", "+/-").encode("ascii", "replace").decode()
    return f"{smtp} {enhanced} {code}: {ascii_text}"


def strip_headers(raw: bytes, names: tuple[bytes, ...] = INTERNAL) -> bytes:
    """``raw`` without the named header fields (folded continuation lines included)."""
    head, sep, body = raw.partition(b"\r\n\r\n")
    if not sep:
        head, sep, body = raw.partition(b"\n\n")
    kept: list[bytes] = []
    skipping = False
    for line in head.splitlines(keepends=True):
        if line[:1] in (b" ", b"\t"):
            if not skipping:
                kept.append(line)
            continue
        skipping = line.split(b":", 1)[0].strip().lower() in names
        if not skipping:
            kept.append(line)
    return b"".join(kept) + sep + body


@dataclass(frozen=True)
class Plan:
    """What one DATA becomes: (recipients, due second or None) per message, and the batch."""

    messages: list[tuple[list[str], int | None]]
    batch_id: str | None


def plan_schedule(headers: Any, rcpts: list[str], now: float, horizon: int) -> Plan:
    """Read X-Scheduled-At and X-SMTPAPI (pure). Raises ScheduleError or SubmitError."""
    raw_at = headers.get("X-Scheduled-At")
    due = (
        check_window(parse_time(raw_at.strip(), "X-Scheduled-At"), now, horizon, "X-Scheduled-At")
        if raw_at
        else None
    )
    api_raw = headers.get("X-SMTPAPI")
    if not api_raw:
        return Plan([(rcpts, due)], None)
    try:
        api = orjson.loads(api_raw)
        assert isinstance(api, dict)
    except (orjson.JSONDecodeError, AssertionError) as exc:
        raise SubmitError("INVALID_SMTPAPI", "X-SMTPAPI is not a JSON object", "X-SMTPAPI") from exc
    batch = api.get("batch_id")
    api_horizon = min(horizon, SMTPAPI_HORIZON)
    if "send_at" in api and "send_each_at" in api:
        raise SubmitError(
            "INVALID_SMTPAPI", "send_at and send_each_at cannot be combined", "X-SMTPAPI"
        )
    if "send_at" in api:
        at = check_window(parse_time(api["send_at"], "send_at"), now, api_horizon, "send_at")
        if due is not None and due != at:
            raise ScheduleError(
                "SCHEDULED_AT_CONFLICT", "X-Scheduled-At and X-SMTPAPI send_at differ", "send_at"
            )
        return Plan([(rcpts, at)], batch)
    if "send_each_at" in api:
        times = api["send_each_at"]
        if not isinstance(times, list) or len(times) != len(rcpts):
            raise SubmitError(
                "INVALID_SMTPAPI",
                f"send_each_at needs one time per recipient ({len(rcpts)})",
                "X-SMTPAPI",
            )
        return Plan(
            [
                ([r], check_window(parse_time(t, "send_each_at"), now, api_horizon, "send_each_at"))
                for r, t in zip(rcpts, times, strict=True)
            ],
            batch,
        )
    return Plan([(rcpts, due)], batch)


class SubmissionHandler:
    """aiosmtpd handler: DATA -> checks -> scheduled events (acknowledged) -> 250."""

    def __init__(
        self,
        view: AccountLookup,
        publisher: Publisher,
        clock: Clock,
        idempotency: IdempotencyLog | None,
        scanning: Scanning | None = None,
    ) -> None:
        self.view, self.publisher, self.clock, self.idempotency = (
            view,
            publisher,
            clock,
            idempotency,
        )
        self.scanning = scanning

    def authenticate(
        self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
    ) -> AuthResult:
        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        account = self.view.authenticate(auth_data.password.decode(errors="replace"))
        if account is None:
            return AuthResult(success=False, handled=False)
        return AuthResult(success=True, auth_data=account.account_id)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        try:
            return await self._data(session, envelope)
        except ScheduleError as exc:
            return smtp_reply(exc.code, exc.message)
        except SubmitError as exc:
            return smtp_reply(exc.code, exc.message)

    async def _data(self, session: Any, envelope: Any) -> str:
        now = self.clock.now()
        account_id = session.auth_data
        lookup: Any = self.view
        account: AccountState = check_account(lookup.account(account_id) if account_id else None)
        raw: bytes = envelope.original_content
        headers = BytesHeaderParser(policy=compat32).parsebytes(raw)
        clean = strip_headers(raw)
        first_id = str(uuid.uuid4())
        key = headers.get("X-Idempotency-Key")
        if key is None or self.idempotency is None:
            return await self._submit(account, headers, envelope, clean, now, first_id)
        key = key.strip()
        if not 1 <= len(key) <= MAX_KEY_LENGTH:
            raise SubmitError("INVALID_IDEMPOTENCY_KEY", "1 to 256 characters")
        digest = hashlib.sha256(
            b"\0".join([envelope.mail_from.encode(), *(r.encode() for r in envelope.rcpt_tos), raw])
        ).hexdigest()
        decision = await self.idempotency.claim(account.account_id, key, digest, first_id)
        if decision.kind == "replay" and decision.response is not None:
            return str(decision.response["smtp"])
        if decision.kind == "mismatch":
            raise SubmitError(
                "IDEMPOTENCY_BODY_MISMATCH", "this key was used with a different message"
            )
        if decision.kind == "in_flight":
            raise SubmitError("IDEMPOTENCY_IN_FLIGHT", "a message with this key is in flight")
        try:
            reply = await self._submit(account, headers, envelope, clean, now, first_id)
        except (ScheduleError, SubmitError):
            await self.idempotency.release(account.account_id, key, first_id)
            raise
        if reply.startswith("250"):
            await self.idempotency.complete(account.account_id, key, first_id, {"smtp": reply})
        else:
            await self.idempotency.release(account.account_id, key, first_id)
        return reply

    async def _submit(
        self,
        account: AccountState,
        headers: Any,
        envelope: Any,
        clean: bytes,
        now: float,
        first_id: str,
    ) -> str:
        scheduled = bool(headers.get("X-Scheduled-At") or headers.get("X-SMTPAPI"))
        horizon = horizon_of(account, scheduled, MAX_HORIZON_SECONDS)
        plan = plan_schedule(headers, list(envelope.rcpt_tos), now, horizon)
        _name, sender = email.utils.parseaddr(headers.get("From") or envelope.mail_from)
        domain = sender.rpartition("@")[2].lower() or envelope.mail_from.rpartition("@")[2]
        try:
            mime, encoding = clean.decode("utf-8"), "utf-8"
        except UnicodeDecodeError:
            mime, encoding = base64.b64encode(clean).decode(), "base64"
        contents = [
            MessageContent(
                mail_from=envelope.mail_from,
                rcpt_to=rcpts,
                from_domain=domain,
                mime=mime,
                mime_encoding=encoding,
                size=len(clean),
            )
            for rcpts, _ in plan.messages
        ]
        if plan.batch_id is not None and self.view.batch(account.account_id, plan.batch_id) is None:
            raise SubmitError(
                "INVALID_BATCH_ID", "invalid batch id; create one with POST /v3/mail/batch"
            )
        for content in contents:
            check_message(account, content, self.view)
        if self.scanning is not None:
            await self.scanning.check(clean)
        ids = [first_id, *(str(uuid.uuid4()) for _ in plan.messages[1:])]
        try:
            for mid, content, (_rcpts, due) in zip(ids, contents, plan.messages, strict=True):
                await self.publisher.publish(
                    Scheduled(
                        occurred_at=to_datetime(now),
                        account_id=account.account_id,
                        message_id=mid,
                        due_at=due if due is not None else int(now),
                        submitted_at=to_datetime(now),
                        source="smtp",
                        batch_id=plan.batch_id,
                        content=content,
                    )
                )
                count("ingest", "scheduled")
        except PublishError as exc:
            log.warning("publish failed", error=str(exc))
            return smtp_reply("BROKER_UNAVAILABLE", "could not store the message; retry")
        dues = [due for _, due in plan.messages]
        if all(d is None for d in dues):
            return f"250 2.0.0 Queued as {' '.join(ids)}"
        return "250 2.0.0 Scheduled as " + ", ".join(
            f"{mid} for {due}" for mid, due in zip(ids, dues, strict=True)
        )


def tls_context(settings: KairosSettings) -> ssl.SSLContext | None:
    """The STARTTLS context when a certificate is configured."""
    if settings.smtp_tls_cert is None or settings.smtp_tls_key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(settings.smtp_tls_cert, settings.smtp_tls_key)
    return context


def plaintext_auth_allowed(settings: KairosSettings) -> bool:
    """Explicit setting, else allowed only when listening on loopback (the embedded default)."""
    if settings.smtp_allow_plaintext_auth is not None:
        return settings.smtp_allow_plaintext_auth
    return settings.smtp_host in ("127.0.0.1", "localhost", "::1")


class SubmissionSMTP(SMTP):
    """aiosmtpd's server with enhanced status codes on its own size refusals."""

    _SIZE_REPLIES = (
        "552 Error: Too much mail data",
        "552 Error: message size exceeds fixed maximum message size",
    )

    async def push(self, status: Any) -> None:
        if isinstance(status, str) and status in self._SIZE_REPLIES:
            status = smtp_reply("MESSAGE_TOO_LARGE", f"at most {HARD_CAP_BYTES} bytes")
        await super().push(status)


def server_factory(settings: KairosSettings, handler: SubmissionHandler) -> Any:
    """A protocol factory for ``loop.create_server``."""
    context = tls_context(settings)

    def factory() -> SMTP:
        return SubmissionSMTP(
            handler,
            hostname="kairos",
            ident="Kairos ESMTP",
            data_size_limit=HARD_CAP_BYTES,
            tls_context=context,
            auth_required=True,
            auth_require_tls=not plaintext_auth_allowed(settings),
            authenticator=handler.authenticate,
        )

    return factory
