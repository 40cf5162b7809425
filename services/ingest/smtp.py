"""SMTP submission (aiosmtpd), on the ingest service's event loop.

AUTH PLAIN/LOGIN with an API key as the password; ``X-Scheduled-At`` (same formats and rules as
``scheduledAt``), Mailgun's ``X-Mailgun-Deliver-By`` (RFC 2822, within 3 days),
``X-Idempotency-Key``, and SendGrid's ``X-SMTPAPI`` (``send_at``,
``send_each_at``, ``batch_id``). Every violation is answered with a reply code, an enhanced
status and a stable code; the 250 names the message id(s) in one line of at most 512 bytes.

The message is read as the client wrote it (:mod:`services.ingest.headers`), never through a
forgiving parser: well-formed fields only, exactly one From; the envelope MAIL FROM, the From and
any Sender are at verified domains of the authenticated account (``553 5.7.1``). A Kairos header
that is present is used or refused (``554 5.5.4``), never ignored. Kairos's own headers, Bcc
and ``X-Kairos-*`` are not stored or relayed. An unexpected exception is logged and answered
``451 4.3.0 INTERNAL_ERROR`` without its text.
"""

from __future__ import annotations

import base64
import hashlib
import re
import ssl
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

import orjson
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

from kairos.logging import get_logger
from kairos.metrics import REJECTED
from kairos.settings import KairosSettings
from schemas.events import MessageContent
from schemas.reference import AccountState
from services.ingest.checks import HARD_CAP_BYTES, check_account, check_domain
from services.ingest.compose import SubmitError
from services.ingest.headers import (
    HeaderError,
    Message,
    check_body,
    check_structure,
    envelope_domain,
    mailbox,
    parse,
)
from services.ingest.schedule import (
    LocalWhen,
    Requested,
    ScheduleError,
    When,
    check_policy,
    check_zone,
    parse_local,
    parse_rfc2822,
    parse_time,
)
from services.ingest.submit import Draft, Submission, Submitter

if TYPE_CHECKING:  # the HTTP app imports this module's readers (Mailgun's messages.mime)
    from services.ingest.http import AccountLookup

log = get_logger("kairos.ingest.smtp")

#: SendGrid's horizon for its SMTP API.
SMTPAPI_HORIZON = 72 * 3600
#: Mailgun's horizon, for X-Mailgun-Deliver-By (and ``o:deliverytime``).
MAILGUN_HORIZON = 3 * 86400
#: The headers Kairos reads (lower case), each with the code a malformed one is refused with.
#: Present means "use me": an empty, blank, duplicated or malformed one is never ignored.
KAIROS_HEADERS: dict[str, str] = {
    "x-scheduled-at": "SCHEDULED_AT_INVALID",
    "x-mailgun-deliver-by": "SCHEDULED_AT_INVALID",
    "x-smtpapi": "INVALID_SMTPAPI",
    "x-idempotency-key": "INVALID_IDEMPOTENCY_KEY",
    "x-kairos-send-local": "SCHEDULED_AT_INVALID",
}
#: Never stored or relayed: Kairos's own headers, Bcc (its recipients stay in the envelope),
#: and the reserved X-Kairos- namespace.
STRIPPED = (*KAIROS_HEADERS, "bcc")
STRIPPED_PREFIXES = ("x-kairos-",)
#: X-SMTPAPI keys: those Kairos honours, and SendGrid's that only tag a message (ignored).
#: Any other (``to``, ``sub``, ``section``, ``filters``...) would change who gets what on
#: SendGrid and is refused rather than silently dropped.
SMTPAPI_KEYS = frozenset(("send_at", "send_each_at", "batch_id"))
SMTPAPI_IGNORED = frozenset(("category", "unique_args", "asm_group_id", "ip_pool"))
#: Recipients per SMTP transaction (RFC 5321 4.5.3.1.8 asks for at least 100).
MAX_RECIPIENTS = 1000
#: RFC 5321 4.5.3.1.5: a reply line is at most 512 octets, CRLF included.
MAX_REPLY_LINE = 510

#: Error code -> (SMTP reply code, enhanced status). One table for every SMTP rejection.
SMTP_CODES: dict[str, tuple[int, str]] = {
    "UNAUTHORIZED": (530, "5.7.0"),
    "ACCOUNT_DISABLED": (550, "5.7.1"),
    "DOMAIN_NOT_OWNED": (553, "5.7.1"),
    "DOMAIN_NOT_VERIFIED": (553, "5.7.1"),
    "INVALID_ADDRESS": (553, "5.1.7"),
    "INVALID_RECIPIENT": (553, "5.1.3"),
    "RECIPIENT_SUPPRESSED": (550, "5.7.1"),
    "SCHEDULING_NOT_ALLOWED": (550, "5.7.1"),
    "TOO_MANY_RECIPIENTS": (554, "5.5.3"),
    "MESSAGE_TOO_LARGE": (552, "5.3.4"),
    "HEADERS_TOO_LARGE": (552, "5.3.4"),
    "INVALID_HEADER_NAME": (554, "5.6.0"),
    "INVALID_HEADER_VALUE": (554, "5.6.0"),
    "DUPLICATE_HEADER": (554, "5.6.0"),
    "MISSING_FROM": (554, "5.6.0"),
    "MULTIPLE_FROM": (554, "5.6.0"),
    "INVALID_BODY": (554, "5.6.0"),
    "IDEMPOTENCY_BODY_MISMATCH": (554, "5.5.0"),
    "IDEMPOTENCY_IN_FLIGHT": (451, "4.5.0"),
    "IDEMPOTENCY_CLAIM_EXPIRED": (451, "4.5.0"),
    "INVALID_IDEMPOTENCY_KEY": (554, "5.5.4"),
    "INVALID_SMTPAPI": (554, "5.5.4"),
    "INVALID_BATCH_ID": (554, "5.5.4"),
    "INVALID_TIME_ZONE": (554, "5.5.4"),
    "INVALID_PASSED_POLICY": (554, "5.5.4"),
    "LOCAL_TIME_PASSED": (554, "5.5.4"),
    "MESSAGE_INFECTED": (554, "5.7.1"),
    "MESSAGE_SPAM": (550, "5.7.1"),
    "SCANNER_UNAVAILABLE": (451, "4.7.0"),
    "BROKER_UNAVAILABLE": (451, "4.3.0"),
    "INTERNAL_ERROR": (451, "4.3.0"),
    "LINE_TOO_LONG": (500, "5.5.2"),
    "NON_ASCII_COMMAND": (500, "5.5.2"),
}


def smtp_reply(code: str, message: str, status: tuple[int, str] | None = None) -> str:
    """The SMTP reply for a rejection with error ``code`` (schedule errors: 554 5.5.4): one
    line of printable US-ASCII, at most 510 characters (512 with its CRLF)."""
    smtp, enhanced = status or SMTP_CODES.get(
        code, (554, "5.5.4" if code.startswith("SCHEDULED_AT") else "5.6.0")
    )
    REJECTED.labels("smtp", code).inc()
    text = "".join(c if " " <= c <= "~" else "?" for c in message.replace("±", "+/-"))
    reply = f"{smtp} {enhanced} {code}: {text}"
    return reply if len(reply) <= MAX_REPLY_LINE else reply[: MAX_REPLY_LINE - 3] + "..."


def queued_reply(ids: list[str], dues: list[int | None]) -> str:
    """The 250 for accepted messages: every id (and due second) when that fits one reply
    line, else the first and a count (a 1,000-recipient ``send_each_at`` makes 1,000 ids)."""
    if all(d is None for d in dues):
        full = f"250 2.0.0 Queued as {' '.join(ids)}"
        short = f"250 2.0.0 Queued {len(ids)} messages as {ids[0]} (+{len(ids) - 1})"
    else:
        full = "250 2.0.0 Scheduled as " + ", ".join(
            f"{mid} for {due}" for mid, due in zip(ids, dues, strict=True)
        )
        short = (
            f"250 2.0.0 Scheduled {len(ids)} messages as {ids[0]} for {dues[0]}"
            f" (+{len(ids) - 1}, the last for {dues[-1]})"
        )
    return full if len(full) <= MAX_REPLY_LINE else short


@dataclass(frozen=True)
class Plan:
    """What one DATA becomes: (recipients, requested time or None) per message, and the
    batch."""

    messages: list[tuple[list[str], Requested | None]]
    batch_id: str | None


@dataclass(frozen=True)
class ReadMessage:
    """What Kairos reads from a submitted message (pure result of :func:`read_submission`):
    the From and Sender domains, its own headers' values (None when absent, never empty),
    and the message to store (without :data:`STRIPPED` fields)."""

    from_domain: str
    sender_domain: str | None
    scheduled_at: str | None
    smtpapi: str | None
    idempotency_key: str | None
    clean: bytes
    deliver_by: str | None = None
    from_address: str = ""
    send_local: str | None = None

    @property
    def scheduled(self) -> bool:
        times = (self.scheduled_at, self.smtpapi, self.deliver_by, self.send_local)
        return any(v is not None for v in times)


def _as_submit_error(exc: HeaderError) -> SubmitError:
    """A header error; on a header Kairos reads, answered with that header's own code."""
    code = KAIROS_HEADERS.get(exc.field or "", exc.code)
    return SubmitError(code, exc.message, exc.field)


def _kairos_value(message: Message, name: str) -> str | None:
    """The value of Kairos header ``name`` (lower case): None if absent; SubmitError with the
    header's code if it is duplicated, empty or blank, or not printable US-ASCII."""
    code = KAIROS_HEADERS[name]
    field = message.one(name)
    if field is None:
        return None
    value = field.ascii()
    if value is None:
        raise SubmitError(code, f"{field.name} must be printable US-ASCII", name)
    value = value.strip(" \t")
    if not value:
        raise SubmitError(code, f"{field.name} is present but empty", name)
    return value


def read_submission(raw: bytes) -> ReadMessage:
    """Check a submitted message's header block and read what Kairos needs from it (pure).

    Raises SubmitError: a header block that is not well-formed (see
    :mod:`services.ingest.headers`), a NUL or bare CR/LF in the body, not exactly one From,
    a From or Sender that is not one valid address, a Kairos header that is duplicated,
    empty or not ASCII."""
    try:
        message = parse(raw)
        check_body(message.rest)
        from_field = check_structure(message)
        from_address, from_domain = mailbox(from_field)
        sender = message.one("sender")
        sender_domain = mailbox(sender)[1] if sender is not None else None
        values = {name: _kairos_value(message, name) for name in KAIROS_HEADERS}
    except HeaderError as exc:
        raise _as_submit_error(exc) from exc
    return ReadMessage(
        from_domain=from_domain,
        sender_domain=sender_domain,
        scheduled_at=values["x-scheduled-at"],
        smtpapi=values["x-smtpapi"],
        idempotency_key=values["x-idempotency-key"],
        clean=message.without(STRIPPED, STRIPPED_PREFIXES),
        deliver_by=values["x-mailgun-deliver-by"],
        from_address=from_address,
        send_local=values["x-kairos-send-local"],
    )


_SEND_LOCAL_FIELD = "X-Kairos-Send-Local"


def send_local_header(value: str) -> LocalWhen:
    """``X-Kairos-Send-Local: 2026-12-24T09:00:00 Europe/Berlin; if-passed=skip`` (the zone
    and the policy optional: the account's default zone, ``next_day``) read into a
    :class:`LocalWhen` (pure); ScheduleError otherwise."""
    when, _, params = value.partition(";")
    words = when.split()
    if not 1 <= len(words) <= 2:
        raise ScheduleError(
            "SCHEDULED_AT_INVALID", "a local time and a time zone", _SEND_LOCAL_FIELD
        )
    day, wall = parse_local(words[0], _SEND_LOCAL_FIELD)
    zone = check_zone(words[1], _SEND_LOCAL_FIELD) if len(words) == 2 else None
    name, _, policy = params.strip().partition("=")
    if params.strip() and name.strip().lower() != "if-passed":
        raise ScheduleError(
            "SCHEDULED_AT_INVALID", "the one parameter is if-passed", _SEND_LOCAL_FIELD
        )
    return LocalWhen(
        wall,
        day,
        zone,
        check_policy(policy.strip() or None, _SEND_LOCAL_FIELD),
        _SEND_LOCAL_FIELD,
    )


def plan_schedule(
    scheduled_at: str | None,
    smtpapi: str | None,
    rcpts: list[str],
    deliver_by: str | None = None,
    send_local: str | None = None,
) -> Plan:
    """Read X-Scheduled-At, X-Mailgun-Deliver-By and X-SMTPAPI values (pure; None when absent,
    as from :func:`read_submission`) into the messages to submit and the times they ask for
    (judged against the clock by the submission core; X-SMTPAPI times within SendGrid's 72
    hours, X-Mailgun-Deliver-By within Mailgun's 3 days). X-Scheduled-At and
    X-Mailgun-Deliver-By may both be given only with the same second. A present X-SMTPAPI must
    name a time (``send_at`` or ``send_each_at``) unless another header does.
    X-Kairos-Send-Local (a local wall time, :func:`send_local_header`) names the one time or
    is a conflict. Raises ScheduleError or SubmitError."""
    if send_local is not None:
        if scheduled_at is not None or deliver_by is not None or smtpapi is not None:
            raise ScheduleError(
                "SCHEDULED_AT_CONFLICT",
                "X-Kairos-Send-Local cannot be combined with another time header",
                _SEND_LOCAL_FIELD,
            )
        return Plan([(rcpts, send_local_header(send_local))], None)
    due = (
        When(parse_time(scheduled_at, "X-Scheduled-At"), "X-Scheduled-At")
        if scheduled_at is not None
        else None
    )
    if deliver_by is not None:
        by = When(
            parse_rfc2822(deliver_by, "X-Mailgun-Deliver-By"),
            "X-Mailgun-Deliver-By",
            MAILGUN_HORIZON,
        )
        if due is not None and due.at != by.at:
            raise ScheduleError(
                "SCHEDULED_AT_CONFLICT",
                "X-Scheduled-At and X-Mailgun-Deliver-By name different times",
                "X-Mailgun-Deliver-By",
            )
        due = by
    if smtpapi is None:
        return Plan([(rcpts, due)], None)
    try:
        api = orjson.loads(smtpapi)
    except orjson.JSONDecodeError as exc:
        raise SubmitError("INVALID_SMTPAPI", "X-SMTPAPI is not JSON", "X-SMTPAPI") from exc
    if not isinstance(api, dict):
        raise SubmitError("INVALID_SMTPAPI", "X-SMTPAPI is not a JSON object", "X-SMTPAPI")
    unknown = sorted(k for k in api if k not in SMTPAPI_KEYS | SMTPAPI_IGNORED)
    if unknown:
        raise SubmitError(
            "INVALID_SMTPAPI", f"X-SMTPAPI {unknown[0][:40]!r} is not supported", "X-SMTPAPI"
        )
    batch = api.get("batch_id")
    if "batch_id" in api and (
        not isinstance(batch, str) or not 1 <= len(batch) <= 128 or not batch.isprintable()
    ):
        raise SubmitError("INVALID_BATCH_ID", "batch_id must be a batch id string", "X-SMTPAPI")
    if "send_at" in api and "send_each_at" in api:
        raise SubmitError(
            "INVALID_SMTPAPI", "send_at and send_each_at cannot be combined", "X-SMTPAPI"
        )
    if "send_at" in api:
        at = When(parse_time(api["send_at"], "send_at"), "send_at", SMTPAPI_HORIZON)
        if due is not None and due.at != at.at:
            raise ScheduleError(
                "SCHEDULED_AT_CONFLICT", "X-Scheduled-At and X-SMTPAPI send_at differ", "send_at"
            )
        return Plan([(rcpts, at)], batch)
    if "send_each_at" in api:
        times = api["send_each_at"]
        if not isinstance(times, list) or len(times) != len(rcpts):
            raise SubmitError(
                "INVALID_SMTPAPI",
                f"send_each_at needs a list of one time per recipient ({len(rcpts)})",
                "X-SMTPAPI",
            )
        if due is not None:
            raise ScheduleError(
                "SCHEDULED_AT_CONFLICT",
                "X-Scheduled-At and X-SMTPAPI send_each_at cannot be combined",
                "send_each_at",
            )
        return Plan(
            [
                ([r], When(parse_time(t, "send_each_at"), "send_each_at", SMTPAPI_HORIZON))
                for r, t in zip(rcpts, times, strict=True)
            ],
            batch,
        )
    if due is None:
        raise SubmitError(
            "INVALID_SMTPAPI",
            "X-SMTPAPI names no send_at or send_each_at; omit it to send at once",
            "X-SMTPAPI",
        )
    return Plan([(rcpts, due)], batch)


def content_of(
    message: ReadMessage, mail_from: str, rcpts: list[str], message_id: str = ""
) -> MessageContent:
    """The stored form of a submitted message, for ``rcpts`` (pure): UTF-8 text when it is,
    base64 of the bytes otherwise. ``message_id`` is not written into it: the client's own
    message stands as written."""
    clean = message.clean
    try:
        mime, encoding = clean.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        mime, encoding = base64.b64encode(clean).decode(), "base64"
    return MessageContent(
        mail_from=mail_from,
        rcpt_to=rcpts,
        from_domain=message.from_domain,
        mime=mime,
        mime_encoding=encoding,
        size=len(clean),
    )


def smtp_submission(account: AccountState, envelope: Any, message: ReadMessage) -> Submission:
    """One DATA read into a submission (pure): a message per planned recipient group; its
    idempotency fingerprint covers the envelope and the message as written."""
    rcpts = list(envelope.rcpt_tos)
    plan = plan_schedule(
        message.scheduled_at, message.smtpapi, rcpts, message.deliver_by, message.send_local
    )
    drafts = [
        Draft(partial(content_of, message, envelope.mail_from, group), when)
        for group, when in plan.messages
    ]
    digest = hashlib.sha256(
        b"\0".join(
            [envelope.mail_from.encode(), *(r.encode() for r in rcpts), envelope.original_content]
        )
    ).hexdigest()
    return Submission(
        account,
        "smtp",
        drafts,
        batch_id=plan.batch_id,
        idempotency_key=message.idempotency_key,
        digest=digest,
    )


class SubmissionHandler:
    """aiosmtpd handler: MAIL FROM (a verified domain) -> RCPT (bounded) -> DATA -> checks ->
    scheduled events (acknowledged) -> 250.

    Every refusal is an SMTP reply with an enhanced status code and a stable code; an
    unexpected exception is logged here and answered ``451 4.3.0 INTERNAL_ERROR`` with a
    generic text, never the exception's."""

    def __init__(self, view: AccountLookup, submitter: Submitter) -> None:
        self.view, self.submitter = view, submitter

    def authenticate(
        self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
    ) -> AuthResult:
        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        account = self.view.authenticate(auth_data.password.decode(errors="replace"))
        if account is None:
            return AuthResult(success=False, handled=False)
        return AuthResult(success=True, auth_data=account.account_id)

    async def handle_exception(self, error: Exception) -> str:
        """aiosmtpd's hook for an exception outside DATA: logged, answered generically."""
        log.error("smtp command failed", error_type=type(error).__name__, exc_info=error)
        return smtp_reply("INTERNAL_ERROR", "internal error; try again later")

    def _account(self, session: Any) -> AccountState:
        account_id = session.auth_data
        return check_account(self.view.account(account_id) if account_id else None)

    def _check_domain(self, account: AccountState, domain: str | None, what: str) -> None:
        """``domain`` (of the ``what`` address) is a verified domain of ``account``."""
        if domain is None:
            raise SubmitError("INVALID_ADDRESS", f"{what} is not a valid email address", what)
        check_domain(self.view, account, domain, what)

    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, mail_options: list[str]
    ) -> str:
        """The envelope sender must be at a verified domain of the authenticated account."""
        try:
            account = self._account(session)
            self._check_domain(account, envelope_domain(address), "MAIL FROM")
        except SubmitError as exc:
            return smtp_reply(exc.code, exc.message)
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 OK"

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        """A recipient with a domain, at most :data:`MAX_RECIPIENTS` per transaction."""
        if envelope_domain(address) is None:
            return smtp_reply("INVALID_RECIPIENT", "the recipient is not a valid email address")
        if len(envelope.rcpt_tos) >= MAX_RECIPIENTS:
            return smtp_reply(
                "TOO_MANY_RECIPIENTS",
                f"at most {MAX_RECIPIENTS} recipients per transaction; send the rest in another",
                (452, "4.5.3"),
            )
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        try:
            return await self._data(session, envelope)
        except ScheduleError as exc:
            return smtp_reply(exc.code, exc.message)
        except SubmitError as exc:
            return smtp_reply(exc.code, exc.message)
        except Exception as exc:  # the client hears a generic 451, the log has the rest
            log.error("smtp submission failed", error_type=type(exc).__name__, exc_info=exc)
            return smtp_reply("INTERNAL_ERROR", "internal error; try again later")

    async def _data(self, session: Any, envelope: Any) -> str:
        """MAIL FROM, From and Sender at verified domains of the account (the submission
        core checks the rest), then one submission for the whole DATA."""
        account = self._account(session)
        self._check_domain(account, envelope_domain(envelope.mail_from), "MAIL FROM")
        message = read_submission(envelope.original_content)
        self._check_domain(account, message.from_domain, "From")
        if message.sender_domain is not None:
            self._check_domain(account, message.sender_domain, "Sender")
        accepted = await self.submitter.submit(smtp_submission(account, envelope, message))
        return queued_reply(accepted.ids, accepted.dues)


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


_ENHANCED = re.compile(r"^[245]\d\d[ -][245]\.\d{1,3}\.\d{1,3}( |$)")
#: aiosmtpd's own refusals that say nothing a client can act on, as Kairos replies.
_AIOSMTPD_REPLIES = {
    "552 Error: Too much mail data": ("MESSAGE_TOO_LARGE", f"at most {HARD_CAP_BYTES} bytes"),
    "552 Error: message size exceeds fixed maximum message size": (
        "MESSAGE_TOO_LARGE",
        f"at most {HARD_CAP_BYTES} bytes",
    ),
    "500 Line too long (see RFC5321 4.5.3.1.6)": (
        "LINE_TOO_LONG",
        "a line is over 1000 bytes (RFC 5321 4.5.3.1.6); fold long header fields",
    ),
    "500 Error: strict ASCII mode": ("NON_ASCII_COMMAND", "commands must be US-ASCII"),
}
#: the enhanced status aiosmtpd's other 4xx/5xx replies get (RFC 3463), by reply code
_DEFAULT_ENHANCED = {
    "421": "4.3.2",
    "451": "4.3.0",
    "500": "5.5.2",
    "501": "5.5.4",
    "502": "5.5.1",
    "503": "5.5.1",
    "504": "5.5.4",
    "530": "5.7.0",
    "535": "5.7.8",
    "538": "5.7.11",
    "550": "5.7.1",
    "552": "5.3.4",
    "553": "5.1.3",
    "554": "5.0.0",
    "555": "5.5.4",
}


def with_enhanced_status(status: str) -> str:
    """aiosmtpd's reply ``status`` as Kairos answers it: its known refusals with a stable
    code, any other 4xx/5xx line with an enhanced status code (RFC 2034/3463)."""
    if status in _AIOSMTPD_REPLIES:
        code, text = _AIOSMTPD_REPLIES[status]
        return smtp_reply(code, text)
    if status[:1] in ("4", "5") and len(status) >= 4 and not _ENHANCED.match(status):
        reply_code, sep, text = status[:3], status[3], status[4:]
        enhanced = _DEFAULT_ENHANCED.get(reply_code, f"{status[0]}.0.0")
        return f"{reply_code}{sep}{enhanced} {text}"
    return status


class SubmissionSMTP(SMTP):
    """aiosmtpd's server with enhanced status codes (and stable codes) on its own refusals."""

    async def push(self, status: Any) -> None:
        if isinstance(status, str):
            status = with_enhanced_status(status)
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
