"""Mailgun compatibility: ``POST /v3/{domain}/messages`` and ``/messages.mime``, enough that
the official ``mailgun`` (Python) and ``mailgun.js`` clients work against Kairos when given its
URL.

Basic auth ``api:KEY``; ``{domain}`` is a verified domain of the key's account. The form
(multipart or urlencoded) is read into a :class:`Submission` and the answer is Mailgun's:
``200 {"id": "<message-id@domain>", "message": "Queued. Thank you."}``; a refusal is
``{"message": ...}`` in Mailgun's words plus Kairos's stable ``code``. ``o:deliverytime``
(RFC 2822) schedules within Mailgun's 3 days (and the plan's horizon); ``o:testmode``
validates without sending. Options that would change when or how Mailgun sends and that Kairos
cannot honour (``o:deliverytime-optimize-period``, ``o:time-zone-localize``, templates...) are
refused, never dropped.
"""

from __future__ import annotations

import base64
import binascii
import email.utils
import hashlib
import mimetypes
from functools import partial
from typing import Any, Protocol

import orjson
from fastapi import APIRouter, Header, Request
from fastapi.responses import JSONResponse
from starlette.datastructures import FormData, UploadFile

from kairos.metrics import REJECTED
from schemas.reference import AccountState
from services.ingest.compose import EmailRequest, SubmitError, compose
from services.ingest.manage import Accounts, authenticate
from services.ingest.schedule import ScheduleError, When, parse_rfc2822
from services.ingest.smtp import MAILGUN_HORIZON, content_of, plan_schedule, read_submission
from services.ingest.submit import Accepted, Draft, Submission, Submitter

MAX_TAGS = 3
#: Form parts and files a request may have (Mailgun's own limit is by size: 25 MB).
MAX_FIELDS = 2000
MAX_FILES = 100
#: Options that only tag or track a message on Mailgun: accepted, not used.
IGNORED_OPTIONS = frozenset(
    ("o:tag", "o:dkim", "o:tracking", "o:tracking-clicks", "o:tracking-opens",
     "o:tracking-pixel-location-top", "o:require-tls", "o:skip-verification", "o:testmode",
     "o:deliverytime")
)  # fmt: skip
FIELDS = frozenset(
    ("from", "to", "cc", "bcc", "subject", "text", "html", "attachment", "inline",
     "recipient-variables")
)  # fmt: skip
_TRUE = ("yes", "true", "True", "1")


class DomainLookup(Accounts, Protocol):
    def domain(self, account_id: str, domain: str) -> Any: ...


def mailgun_error(status: int, message: str, code: str) -> JSONResponse:
    """An error in Mailgun's shape, with Kairos's stable ``code`` beside it."""
    REJECTED.labels("mailgun", code).inc()
    return JSONResponse({"message": message, "code": code}, status_code=status)


def _bad(message: str, field: str | None = None, code: str = "INVALID_REQUEST") -> SubmitError:
    return SubmitError(code, message, field)


def basic_account(view: Accounts, authorization: str | None) -> AccountState:
    """The account of Basic ``api:KEY``; SubmitError 401 otherwise."""
    scheme, _, token = (authorization or "").partition(" ")
    try:
        user, _, key = base64.b64decode(token, validate=True).decode().partition(":")
    except (binascii.Error, ValueError) as exc:
        raise SubmitError("UNAUTHORIZED", "Forbidden", None, 401) from exc
    if scheme.lower() != "basic" or user != "api" or not key:
        raise SubmitError("UNAUTHORIZED", "Forbidden", None, 401)
    return authenticate(view, f"Bearer {key}")


def _values(form: FormData, name: str) -> list[str]:
    out = []
    for v in form.getlist(name):
        if not isinstance(v, str):
            raise _bad(f"'{name}' must be a text parameter", name)
        out.append(v)
    return out


def _one(form: FormData, name: str) -> str | None:
    values = _values(form, name)
    if len(values) > 1:
        raise _bad(f"'{name}' parameter is given more than once", name)
    return values[0] if values else None


def _addresses(form: FormData, name: str) -> list[str]:
    """Every address of a repeated and/or comma-separated parameter."""
    out = []
    for value in _values(form, name):
        for display, addr in email.utils.getaddresses([value]):
            if not addr:
                raise _bad(f"'{name}' parameter is not a valid address", name, "INVALID_ADDRESS")
            out.append(f"{display} <{addr}>" if display else addr)
    return out


async def _files(form: FormData, name: str) -> list[dict[str, str]]:
    out = []
    for i, part in enumerate(form.getlist(name)):
        if not isinstance(part, UploadFile):
            raise _bad(f"'{name}' must be a file", name, "INVALID_ATTACHMENT")
        filename = part.filename or f"{name}-{i}"
        kind = part.content_type or ""
        if not kind or kind == "application/octet-stream":
            kind = mimetypes.guess_type(filename)[0] or "application/octet-stream"
        data = await part.read()
        out.append(
            {"filename": filename, "content": base64.b64encode(data).decode(), "contentType": kind}
        )
    return out


def options(form: FormData) -> tuple[When | None, bool]:
    """``o:deliverytime`` (within Mailgun's 3 days) and ``o:testmode``; every other option is
    ignored (it only tags or tracks) or refused."""
    for name in form:
        if name.startswith("o:") and name not in IGNORED_OPTIONS:
            raise _bad(f"'{name}' is not supported by Kairos", name, "UNSUPPORTED_FIELD")
    tags = _values(form, "o:tag")
    if len(tags) > MAX_TAGS:
        raise _bad(f"at most {MAX_TAGS} 'o:tag' values", "o:tag")
    when = None
    at = _one(form, "o:deliverytime")
    if at is not None:
        try:
            when = When(parse_rfc2822(at, "o:deliverytime"), "o:deliverytime", MAILGUN_HORIZON)
        except ScheduleError as exc:
            raise SubmitError(exc.code, exc.message, exc.field) from exc
    testmode = _one(form, "o:testmode")
    return when, testmode is not None and testmode.strip() in _TRUE


def _digest(form: FormData, files: list[dict[str, str]]) -> str:
    """A fingerprint of a form (parameters in order, and the files' bytes)."""
    parts = [[k, v] for k, v in form.multi_items() if isinstance(v, str)]
    return hashlib.sha256(orjson.dumps([parts, files])).hexdigest()


def _substitute(text: str | None, variables: dict[str, Any]) -> str | None:
    if text is None:
        return None
    for key, value in variables.items():
        text = text.replace(f"%recipient.{key}%", str(value))
    return text


async def message_submission(account: AccountState, form: FormData) -> Submission:
    """A ``/messages`` form read into a submission: one message, or one per ``to`` address
    with ``recipient-variables`` (Mailgun's batch sending, ``%recipient.KEY%`` replaced)."""
    for name in form:
        known = name in FIELDS or name.startswith(("o:", "h:", "v:"))
        if not known:
            raise _bad(f"'{name}' parameter is not supported by Kairos", name, "UNSUPPORTED_FIELD")
    when, testmode = options(form)
    sender = _one(form, "from")
    if not sender:
        raise _bad("'from' parameter is missing", "from", "MISSING_FIELD")
    to = _addresses(form, "to")
    if not to:
        raise _bad("'to' parameter is missing", "to", "MISSING_RECIPIENT")
    text, html = _one(form, "text"), _one(form, "html")
    if text is None and html is None:
        raise _bad(
            "Need at least one of 'text', 'html' or 'template' parameters specified",
            "text",
            "MISSING_BODY",
        )
    headers = {name[2:]: value for name in form if name.startswith("h:")
               for value in [_one(form, name) or ""]}  # fmt: skip
    variables = {name[2:]: _one(form, name) for name in form if name.startswith("v:")}
    if variables:
        headers["X-Mailgun-Variables"] = orjson.dumps(variables).decode()
    files = await _files(form, "attachment") + await _files(form, "inline")
    fields = {
        "from": sender,
        "cc": _addresses(form, "cc") or None,
        "bcc": _addresses(form, "bcc") or None,
        "subject": _one(form, "subject") or "",
        "headers": headers or None,
        "attachments": files or None,
    }
    per_recipient = _one(form, "recipient-variables")
    groups: list[tuple[list[str], dict[str, Any]]] = [(to, {})]
    if per_recipient is not None:
        try:
            table = orjson.loads(per_recipient)
        except orjson.JSONDecodeError as exc:
            raise _bad("'recipient-variables' is not JSON", "recipient-variables") from exc
        if not isinstance(table, dict):
            raise _bad("'recipient-variables' is a JSON object", "recipient-variables")
        groups = []
        for address in to:
            addr = email.utils.parseaddr(address)[1]
            mine = table.get(addr, {})
            if not isinstance(mine, dict):
                raise _bad(f"recipient-variables of {addr} is not an object", "recipient-variables")
            groups.append(([address], mine))
    drafts = []
    for recipients, mine in groups:
        try:
            req = EmailRequest.model_validate(
                {
                    **fields,
                    "to": recipients,
                    "subject": _substitute(fields["subject"], mine),  # type: ignore[arg-type]
                    "text": _substitute(text, mine),
                    "html": _substitute(html, mine),
                }
            )
        except ValueError as exc:
            raise _bad(str(exc).splitlines()[0]) from exc
        drafts.append(Draft(partial(compose, req), when))
    return Submission(account, "mailgun", drafts, digest=_digest(form, files), dry_run=testmode)


async def mime_submission(account: AccountState, form: FormData) -> Submission:
    """A ``/messages.mime`` form (``to`` and the ``message`` file) read into a submission: the
    message as the SMTP door reads one (its X-Mailgun-Deliver-By, X-Scheduled-At and
    X-SMTPAPI headers too); ``o:deliverytime`` may name the time instead."""
    for name in form:
        if name not in ("to", "message") and not name.startswith(("o:", "v:", "h:")):
            raise _bad(f"'{name}' parameter is not supported by Kairos", name, "UNSUPPORTED_FIELD")
        if name.startswith(("v:", "h:")):
            raise _bad(f"'{name}' cannot change a MIME message; write it in the message", name,
                       "UNSUPPORTED_FIELD")  # fmt: skip
    when, testmode = options(form)
    to = [email.utils.parseaddr(a)[1] for a in _addresses(form, "to")]
    if not to:
        raise _bad("'to' parameter is missing", "to", "MISSING_RECIPIENT")
    parts = form.getlist("message")
    if len(parts) != 1 or not isinstance(parts[0], UploadFile):
        raise _bad("'message' parameter is missing (one MIME file)", "message", "MISSING_FIELD")
    raw = await parts[0].read()
    message = read_submission(raw)
    try:
        plan = plan_schedule(
            message.scheduled_at, message.smtpapi, to, message.deliver_by, message.send_local
        )
    except ScheduleError as exc:
        raise SubmitError(exc.code, exc.message, exc.field) from exc
    if when is not None:
        if any(
            w is not None and (not isinstance(w, When) or w.at != when.at) for _, w in plan.messages
        ):
            raise SubmitError(
                "SCHEDULED_AT_CONFLICT",
                "o:deliverytime and the message's own time header differ",
                "o:deliverytime",
            )
        plan = type(plan)([(group, when) for group, _ in plan.messages], plan.batch_id)
    drafts = [
        Draft(partial(content_of, message, message.from_address, group), due)
        for group, due in plan.messages
    ]
    digest = hashlib.sha256(b"\0".join([*(a.encode() for a in to), raw])).hexdigest()
    return Submission(
        account,
        "mailgun",
        drafts,
        batch_id=plan.batch_id,
        idempotency_key=message.idempotency_key,
        digest=digest,
        dry_run=testmode,
    )


def queued(accepted: Accepted, domain: str) -> JSONResponse:
    """Mailgun's answer: the (first) message's id in angle brackets."""
    return JSONResponse({"id": f"<{accepted.ids[0]}@{domain}>", "message": "Queued. Thank you."})


def mailgun_router(view: DomainLookup, submitter: Submitter) -> APIRouter:
    """``/v3/{domain}/messages`` and ``/v3/{domain}/messages.mime``."""
    router = APIRouter(prefix="/v3", tags=["mailgun"])

    async def handle(request: Request, domain: str, authorization: str | None, mime: bool) -> Any:
        try:
            account = basic_account(view, authorization)
        except SubmitError as exc:
            response = mailgun_error(exc.status, exc.message if exc.status != 401 else "Forbidden",
                                     exc.code)  # fmt: skip
            if exc.status == 401:
                response.headers["WWW-Authenticate"] = 'Basic realm="MG API"'
            return response
        known = view.domain(account.account_id, domain.lower())
        if known is None:
            return mailgun_error(404, f"Domain not found: {domain}", "DOMAIN_NOT_OWNED")
        if not known.verified:
            return mailgun_error(
                403, f"Domain {domain} is not verified; verify it first", "DOMAIN_NOT_VERIFIED"
            )
        try:
            try:
                form = await request.form(max_files=MAX_FILES, max_fields=MAX_FIELDS)
            except Exception as exc:  # the form parser's errors are many: each is a bad form
                raise _bad("the body is not a valid form (multipart or urlencoded)") from exc
            try:
                builder = mime_submission if mime else message_submission
                accepted = await submitter.submit(await builder(account, form))
            finally:
                await form.close()
        except SubmitError as exc:
            return mailgun_error(exc.status, exc.message, exc.code)
        return queued(accepted, domain.lower())

    @router.post(
        "/{domain}/messages",
        responses=_RESPONSES,
        openapi_extra={"requestBody": _FORM_BODY},
    )
    async def messages(
        domain: str, request: Request, authorization: str | None = Header(default=None)
    ) -> Any:
        """Send (or, with ``o:deliverytime``, schedule within 3 days) a message built from
        form parameters."""
        return await handle(request, domain, authorization, mime=False)

    @router.post(
        "/{domain}/messages.mime",
        responses=_RESPONSES,
        openapi_extra={"requestBody": _MIME_BODY},
    )
    async def messages_mime(
        domain: str, request: Request, authorization: str | None = Header(default=None)
    ) -> Any:
        """Send (or schedule) a MIME message as written, to ``to``."""
        return await handle(request, domain, authorization, mime=True)

    return router


_TEXT = {"type": "string"}
_MANY = {"type": "array", "items": {"type": "string"}}
_FILES = {"type": "array", "items": {"type": "string", "format": "binary"}}
_FORM_SCHEMA = {
    "type": "object",
    "required": ["from", "to"],
    "properties": {
        "from": _TEXT,
        "to": {**_MANY, "description": "repeated, or comma-separated"},
        "cc": _MANY,
        "bcc": _MANY,
        "subject": _TEXT,
        "text": _TEXT,
        "html": _TEXT,
        "attachment": _FILES,
        "inline": _FILES,
        "o:deliverytime": {**_TEXT, "description": "RFC 2822, at most 3 days ahead"},
        "o:tag": _MANY,
        "o:testmode": {**_TEXT, "description": "yes: validate, do not send"},
        "recipient-variables": {**_TEXT, "description": "JSON: one message per to address"},
    },
    "additionalProperties": {"type": "string", "description": "h:X-Header, v:variable"},
}
_FORM_BODY = {
    "required": True,
    "content": {
        "multipart/form-data": {"schema": _FORM_SCHEMA},
        "application/x-www-form-urlencoded": {"schema": _FORM_SCHEMA},
    },
}
_MIME_BODY = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["to", "message"],
                "properties": {
                    "to": _MANY,
                    "message": {"type": "string", "format": "binary"},
                    "o:deliverytime": _TEXT,
                    "o:testmode": _TEXT,
                },
            }
        }
    },
}
_ERROR = {"description": "Mailgun's error shape: {message} (and code)"}
_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "Queued: {id, message}"},
    **{status: _ERROR for status in (400, 401, 403, 404, 409, 413, 503)},
}
