"""Resend compatibility: enough of Resend's API that its official SDKs (``resend`` for Python
and Node) work against Kairos when pointed at it (``RESEND_API_URL`` / ``baseUrl``).

* ``POST /emails``: Resend's fields; ``scheduled_at`` in ISO 8601 or natural language ("in 1
  hour", "tomorrow at 9am", "Friday at 3pm ET"), read in the account's time zone when it names
  none, at most 30 days ahead; ``Idempotency-Key``. 200 ``{"id"}`` (and ``scheduled_at``, the
  instant the time resolved to).
* ``POST /emails/batch``: up to 100 emails; ``x-batch-validation: strict`` (all or none) or
  ``permissive`` (the valid ones; ``errors: [{index, message}]`` for the others).
* ``GET /emails/{id}``, ``GET /emails`` (``limit``, ``after``, ``before``), ``PATCH
  /emails/{id}`` (``scheduled_at``), ``POST /emails/{id}/cancel``: the management use cases of
  :mod:`services.ingest.manage`.

This module only reads Resend's protocol into a :class:`Submission` and formats answers;
every rule is the submission core's. Errors have Resend's shape ``{statusCode, name, message}``
plus Kairos's stable ``code``; success bodies never carry ``statusCode`` (the Python SDK takes
one as an error).
"""

from __future__ import annotations

import base64
import mimetypes
import re
from datetime import UTC, datetime
from functools import partial
from typing import Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import JSONResponse

from kairos.clock import Clock
from kairos.metrics import REJECTED
from schemas.events import CancelRequested
from schemas.reference import AccountState
from services.ingest.checks import horizon_of
from services.ingest.compose import EmailRequest, SubmitError, check_unicode, compose
from services.ingest.idempotency import body_digest
from services.ingest.lifecycle import STATUSES
from services.ingest.manage import Accounts, ScheduledMail, authenticate
from services.ingest.schedule import MAX_HORIZON_SECONDS, ScheduleError, When, parse_natural_time
from services.ingest.submit import Accepted, Draft, Submission, Submitter

#: Resend's limits.
RESEND_HORIZON_SECONDS = 30 * 86400
MAX_RECIPIENTS = 50
MAX_BATCH = 100
MAX_LIST = 100
#: The fields of an email Kairos reads, and Resend's that it cannot honour (refused, never
#: silently dropped).
FIELDS = frozenset(
    ("from", "to", "cc", "bcc", "reply_to", "subject", "html", "text", "headers",
     "attachments", "tags", "scheduled_at")
)  # fmt: skip
UNSUPPORTED = frozenset(("template", "topic_id", "react"))
_TAG = re.compile(r"[A-Za-z0-9_-]{1,256}", re.ASCII)

#: Kairos code -> (status, Resend's error name), where the status or name is not the default.
_NAMES: dict[str, tuple[int, str]] = {
    "INVALID_IDEMPOTENCY_KEY": (400, "invalid_idempotency_key"),
    "IDEMPOTENCY_BODY_MISMATCH": (409, "invalid_idempotent_request"),
    "IDEMPOTENCY_IN_FLIGHT": (409, "concurrent_idempotent_requests"),
    "NOT_FOUND": (404, "not_found"),
    "METHOD_NOT_ALLOWED": (405, "method_not_allowed"),
    "INVALID_ATTACHMENT": (422, "invalid_attachment"),
    "MISSING_RECIPIENT": (422, "missing_required_field"),
    "MISSING_BODY": (422, "missing_required_field"),
    "MISSING_FIELD": (422, "missing_required_field"),
    "MESSAGE_INFECTED": (451, "security_error"),
    "MESSAGE_SPAM": (451, "security_error"),
    "MESSAGE_NOT_PENDING": (409, "validation_error"),
    "MESSAGE_TOO_LARGE": (413, "validation_error"),
}
#: Kairos's status -> Resend's ``last_event``.
LAST_EVENT = {
    "scheduled": "scheduled",
    "paused": "scheduled",
    "deferred": "delivery_delayed",
    "due": "queued",
    "delivered": "delivered",
    "failed": "failed",
    "cancelled": "canceled",
}


def resend_error(status: int, name: str, message: str, code: str) -> JSONResponse:
    """An error in Resend's shape, with Kairos's stable ``code`` beside it."""
    REJECTED.labels("resend", code).inc()
    return JSONResponse(
        {"statusCode": status, "name": name, "message": message, "code": code},
        status_code=status,
    )


def error_of(exc: SubmitError) -> tuple[int, str]:
    """The status and Resend error name for a Kairos refusal: a request Resend would call
    invalid is 422 ``validation_error``; a refusal of the account (a domain it does not own or
    has not verified, a plan without scheduling) is 403 ``validation_error`` as Resend's is."""
    if exc.code in _NAMES:
        return _NAMES[exc.code]
    if exc.code == "INVALID_ADDRESS" and exc.field == "from":
        return 422, "invalid_from_address"
    if exc.status == 400:
        return 422, "validation_error"
    if exc.status >= 500:
        return exc.status, "application_error"
    return exc.status, "validation_error"


def from_submit(exc: SubmitError) -> JSONResponse:
    status, name = error_of(exc)
    return resend_error(status, name, exc.message, exc.code)


def resend_account(view: Accounts, authorization: str | None) -> AccountState:
    """The account of the Bearer key; SubmitError: 401 ``missing_api_key`` without one, 403
    ``invalid_api_key`` for a key that is not one (Resend's statuses)."""
    if not (authorization or "").removeprefix("Bearer ").strip():
        raise SubmitError(
            "MISSING_API_KEY", "Missing API key in the authorization header", None, 401
        )
    try:
        return authenticate(view, authorization)
    except SubmitError as exc:
        if exc.code == "UNAUTHORIZED":
            raise SubmitError("INVALID_API_KEY", "API key is invalid", None, 403) from exc
        raise


_AUTH_NAMES = {"MISSING_API_KEY": "missing_api_key", "INVALID_API_KEY": "invalid_api_key"}


def _answer_error(exc: SubmitError) -> JSONResponse:
    if exc.code in _AUTH_NAMES:
        return resend_error(exc.status, _AUTH_NAMES[exc.code], exc.message, exc.code)
    return from_submit(exc)


def _invalid(message: str, field: str | None) -> SubmitError:
    return SubmitError("INVALID_REQUEST", message, field)


def _addresses(value: Any, field: str, required: bool = False) -> list[str] | None:
    """A string or a list of strings (Resend's address fields); None when absent."""
    if value is None:
        if required:
            raise SubmitError("MISSING_FIELD", f"The `{field}` field is missing.", field)
        return None
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise _invalid(f"`{field}` must be a string or a list of strings", field)
    if required and not values:
        raise SubmitError("MISSING_FIELD", f"The `{field}` field is missing.", field)
    if len(values) > MAX_RECIPIENTS:
        raise SubmitError(
            "TOO_MANY_RECIPIENTS", f"`{field}` has more than {MAX_RECIPIENTS} addresses", field
        )
    return values


def _string(value: Any, field: str) -> str | None:
    if value is not None and not isinstance(value, str):
        raise _invalid(f"`{field}` must be a string", field)
    return value


def _attachments(value: Any) -> list[dict[str, str]] | None:
    """Resend's attachments as Kairos's: ``content`` base64 (or, from the Python SDK, a list
    of byte values). ``path`` (a URL Resend would fetch) is refused: Kairos fetches nothing on
    a client's behalf."""
    if value is None:
        return None
    if not isinstance(value, list):
        raise _invalid("`attachments` must be a list", "attachments")
    out = []
    for i, a in enumerate(value):
        field = f"attachments[{i}]"
        if not isinstance(a, dict):
            raise SubmitError("INVALID_ATTACHMENT", f"{field} must be an object", field)
        unknown = set(a) - {"content", "filename", "path", "content_type", "content_id"}
        if unknown or a.get("content_id") is not None:
            name = sorted(unknown)[0] if unknown else "content_id"
            raise SubmitError(
                "INVALID_ATTACHMENT", f"{field}.{name} is not supported", f"{field}.{name}"
            )
        if a.get("path") is not None:
            raise SubmitError(
                "INVALID_ATTACHMENT",
                f"{field}: Kairos does not fetch attachments by path; send content (base64)",
                f"{field}.path",
            )
        filename = a.get("filename")
        if not isinstance(filename, str) or not filename:
            raise SubmitError(
                "INVALID_ATTACHMENT", f"{field} needs a filename", f"{field}.filename"
            )
        content = a.get("content")
        if isinstance(content, list):
            if not all(isinstance(b, int) and not isinstance(b, bool) and 0 <= b < 256
                       for b in content):  # fmt: skip
                raise SubmitError(
                    "INVALID_ATTACHMENT", f"{field}.content is not bytes", f"{field}.content"
                )
            content = base64.b64encode(bytes(content)).decode()
        if not isinstance(content, str) or not content:
            raise SubmitError(
                "INVALID_ATTACHMENT", f"{field} needs content (base64)", f"{field}.content"
            )
        kind = a.get("content_type") or mimetypes.guess_type(filename)[0]
        if kind is not None and not isinstance(kind, str):
            raise SubmitError("INVALID_ATTACHMENT", f"{field}.content_type must be a string",
                              f"{field}.content_type")  # fmt: skip
        out.append(
            {
                "filename": filename,
                "content": content,
                "contentType": kind or "application/octet-stream",
            }
        )
    return out


def _tags(value: Any) -> None:
    """Resend's tags: checked as Resend checks them, then not used (they only label a
    message in Resend's analytics)."""
    if value is None:
        return
    if not isinstance(value, list):
        raise _invalid("`tags` must be a list of {name, value}", "tags")
    for i, tag in enumerate(value):
        ok = isinstance(tag, dict) and set(tag) <= {"name", "value"}
        for part in ("name", "value") if ok else ():
            v = tag.get(part)
            if (part == "name" or v is not None) and not (isinstance(v, str) and _TAG.fullmatch(v)):
                ok = False
        if not ok:
            raise _invalid(
                "tags are {name, value} of ASCII letters, numbers, underscores or dashes",
                f"tags[{i}]",
            )


def resend_email(
    body: Any, account: AccountState, now: float, prefix: str = ""
) -> tuple[EmailRequest, When | None]:
    """One Resend email object read into Kairos's request and its requested time (pure).
    SubmitError for anything Resend would refuse, or that Kairos cannot honour."""
    if not isinstance(body, dict):
        raise _invalid("an email is a JSON object", prefix or None)
    check_unicode(body)
    for name in body:
        if name in UNSUPPORTED and body[name] is not None:
            raise _invalid(f"`{name}` is not supported by Kairos", name)
        if name not in FIELDS and name not in UNSUPPORTED:
            raise _invalid(f"unknown field `{name}`", name)
    sender = _string(body.get("from"), "from")
    if not sender:
        raise SubmitError("MISSING_FIELD", "The `from` field is missing.", "from")
    subject = _string(body.get("subject"), "subject")
    if subject is None:
        raise SubmitError("MISSING_FIELD", "The `subject` field is missing.", "subject")
    headers = body.get("headers")
    if headers is not None and (
        not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values())
    ):
        raise _invalid("`headers` maps names to string values", "headers")
    _tags(body.get("tags"))
    when = None
    if body.get("scheduled_at") is not None:
        try:
            at = parse_natural_time(body["scheduled_at"], now, account.time_zone, "scheduled_at")
        except ValueError as exc:  # ScheduleError, or an account zone that is not one
            code = exc.code if isinstance(exc, ScheduleError) else "SCHEDULED_AT_INVALID"
            raise SubmitError(code, str(getattr(exc, "message", exc)), "scheduled_at") from exc
        when = When(at, "scheduled_at", RESEND_HORIZON_SECONDS)
    try:
        req = EmailRequest.model_validate(
            {
                "from": sender,
                "to": _addresses(body.get("to"), "to", required=True),
                "cc": _addresses(body.get("cc"), "cc"),
                "bcc": _addresses(body.get("bcc"), "bcc"),
                "reply_to": _addresses(body.get("reply_to"), "reply_to"),
                "subject": subject,
                "text": _string(body.get("text"), "text"),
                "html": _string(body.get("html"), "html"),
                "headers": headers,
                "attachments": _attachments(body.get("attachments")),
            }
        )
    except ValueError as exc:
        if isinstance(exc, SubmitError):
            raise
        raise _invalid(str(exc).splitlines()[0], None) from exc
    return req, when


def _prefixed(exc: SubmitError, index: int) -> SubmitError:
    field = f"[{index}].{exc.field}" if exc.field else f"[{index}]"
    return SubmitError(exc.code, exc.message, field, exc.status)


def email_submission(
    account: AccountState, body: Any, idempotency_key: str | None, now: float
) -> Submission:
    """A ``POST /emails`` body read into a submission (pure)."""
    req, when = resend_email(body, account, now)
    return Submission(
        account,
        "resend",
        [Draft(partial(compose, req), when)],
        idempotency_key=idempotency_key,
        digest=body_digest(body),
    )


def iso(second: int | None) -> str | None:
    """A unix second as Resend writes instants (ISO 8601, UTC)."""
    if second is None:
        return None
    return datetime.fromtimestamp(second, UTC).isoformat().replace("+00:00", "Z")


def email_object(found: dict[str, Any]) -> dict[str, Any]:
    """A Kairos message (lifecycle summary) as Resend's email object."""
    status = found["status"]
    last_event = LAST_EVENT.get(status, status)
    if status == "failed":
        reasons = [e.get("reason") for e in found.get("timeline", []) if e["type"] == "failed"]
        if "smtp_permanent" in reasons:
            last_event = "bounced"
    return {
        "object": "email",
        "id": found["id"],
        "to": found["to"],
        "from": None,
        "subject": found["subject"],
        "created_at": found["submitted_at"],
        "scheduled_at": iso(found["scheduled_at"]),
        "last_event": last_event,
        "html": None,
        "text": None,
        "cc": None,
        "bcc": None,
        "reply_to": None,
        "status": status,
    }


def _replayed(response: JSONResponse, accepted: Accepted) -> JSONResponse:
    if accepted.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return response


def resend_router(
    view: Accounts, submitter: Submitter, mail: ScheduledMail, clock: Clock
) -> APIRouter:
    """Resend's ``/emails`` API over the submission core and the management use cases."""
    router = APIRouter(tags=["resend"])
    store = mail.store

    async def json_body(request: Request) -> Any:
        try:
            return await request.json()
        except ValueError as exc:
            raise _invalid("the request body is not valid JSON", None) from exc

    @router.post(
        "/emails",
        responses=_RESPONSES,
        openapi_extra={"requestBody": _body(_EMAIL, _EXAMPLE)},
    )
    async def send(
        request: Request,
        authorization: str | None = Header(default=None),
        idempotency_key: str | None = Header(default=None),
    ) -> JSONResponse:
        """Send an email now, or at ``scheduled_at`` (ISO 8601 or natural language, at most
        30 days ahead). With an ``Idempotency-Key`` (at most 256 characters) a retry creates
        no second message."""
        try:
            account = resend_account(view, authorization)
            body = await json_body(request)
            submission = email_submission(account, body, idempotency_key, clock.now())
            accepted = await submitter.submit(submission)
        except SubmitError as exc:
            return _answer_error(exc)
        answer: dict[str, Any] = {"id": accepted.ids[0]}
        if accepted.dues[0] is not None:
            answer["scheduled_at"] = iso(accepted.dues[0])
        return _replayed(JSONResponse(answer), accepted)

    @router.post(
        "/emails/batch",
        responses=_RESPONSES,
        openapi_extra={
            "requestBody": _body(
                {"type": "array", "maxItems": MAX_BATCH, "items": _EMAIL}, [_EXAMPLE]
            ),
            "parameters": [
                {
                    "name": "x-batch-validation",
                    "in": "header",
                    "required": False,
                    "schema": {"type": "string", "enum": ["strict", "permissive"]},
                    "description": "strict (default): all or none; permissive: the valid ones",
                }
            ],
        },
    )
    async def batch(
        request: Request,
        authorization: str | None = Header(default=None),
        idempotency_key: str | None = Header(default=None),
        x_batch_validation: str | None = Header(default=None),
    ) -> JSONResponse:
        """Up to 100 emails. ``strict``: every one is accepted or none is (the first error
        answers). ``permissive``: the valid ones are accepted together; ``errors`` lists the
        others by index."""
        try:
            account = resend_account(view, authorization)
            mode = x_batch_validation or "strict"
            if mode not in ("strict", "permissive"):
                raise _invalid("x-batch-validation is strict or permissive", "x-batch-validation")
            body = await json_body(request)
            if not isinstance(body, list) or not body:
                raise _invalid("the body is a list of 1 to 100 emails", None)
            if len(body) > MAX_BATCH:
                raise _invalid(f"at most {MAX_BATCH} emails in a batch", None)
            now = clock.now()
            drafts: list[Draft] = []
            errors: list[dict[str, Any]] = []
            for i, item in enumerate(body):
                try:
                    req, when = resend_email(item, account, now)
                    draft = Draft(partial(compose, req), when)
                    if mode == "permissive":  # judged alone, published with the others
                        await submitter.submit(Submission(account, "resend", [draft], dry_run=True))
                    drafts.append(draft)
                except SubmitError as exc:
                    if mode == "strict":
                        raise _prefixed(exc, i) from exc
                    errors.append({"index": i, "message": exc.message, "code": exc.code})
            data: list[dict[str, Any]] = []
            replayed = False
            if drafts:
                accepted = await submitter.submit(
                    Submission(
                        account,
                        "resend",
                        drafts,
                        idempotency_key=idempotency_key,
                        digest=body_digest([mode, body]),
                    )
                )
                data = [{"id": mid} for mid in accepted.ids]
                replayed = accepted.replayed
        except SubmitError as exc:
            return _answer_error(exc)
        answer: dict[str, Any] = {"data": data}
        if mode == "permissive":
            answer["errors"] = errors
        response = JSONResponse(answer)
        if replayed:
            response.headers["Idempotent-Replayed"] = "true"
        return response

    @router.get("/emails/{email_id}", responses=_RESPONSES)
    async def get(email_id: str, authorization: str | None = Header(default=None)) -> JSONResponse:
        """Resend's email object: ``last_event`` from Kairos's status (scheduled, queued,
        delivered, delivery_delayed, bounced, failed, canceled), ``scheduled_at``."""
        try:
            account = resend_account(view, authorization)
            return JSONResponse(email_object(await mail.find(account, email_id)))
        except SubmitError as exc:
            return _answer_error(exc)

    @router.get("/emails", responses=_RESPONSES)
    async def list_emails(
        authorization: str | None = Header(default=None),
        limit: str | None = Query(default=None, description="1 to 100 (default 20)"),
        after: str | None = Query(default=None, description="an email id: the page after it"),
        before: str | None = Query(default=None, description="an email id: the page before it"),
    ) -> JSONResponse:
        """The account's emails in due order, ``limit`` at a time."""
        try:
            account = resend_account(view, authorization)
            size = 20
            if limit is not None:
                if not limit.isascii() or not limit.isdigit() or not 1 <= int(limit) <= MAX_LIST:
                    raise _invalid(f"limit is 1 to {MAX_LIST}", "limit")
                size = int(limit)
            if after is not None and before is not None:
                raise _invalid("after and before cannot be combined", "after")
            cursors: list[tuple[int, str] | None] = []
            for name, value in (("after", after), ("before", before)):
                if value is None:
                    cursors.append(None)
                    continue
                row = store.get(account.account_id, value)
                if row is None:
                    raise _invalid(f"{name} is not an email of this account", name)
                cursors.append((row["scheduled_at"] or 0, row["id"]))
            rows = store.list(
                account.account_id, STATUSES, None, None, None, size + 1, cursors[0], cursors[1]
            )
        except SubmitError as exc:
            return _answer_error(exc)
        more = len(rows) > size
        rows = rows[1:] if (more and before is not None) else rows[:size]
        return JSONResponse(
            {"object": "list", "has_more": more, "data": [email_object(r) for r in rows]}
        )

    @router.patch(
        "/emails/{email_id}",
        responses=_RESPONSES,
        openapi_extra={
            "requestBody": _body(
                {
                    "type": "object",
                    "required": ["scheduled_at"],
                    "properties": {
                        "scheduled_at": {"type": "string"},
                        "id": {"type": "string", "description": "the path's id (optional)"},
                    },
                },
                {"scheduled_at": "in 1 hour"},
            )
        },
    )
    async def update(
        email_id: str, request: Request, authorization: str | None = Header(default=None)
    ) -> JSONResponse:
        """Move a scheduled email to ``scheduled_at`` (same formats and limits as sending)."""
        try:
            account = resend_account(view, authorization)
            body = await json_body(request)
            if not isinstance(body, dict):
                raise _invalid("the body is a JSON object", None)
            if body.get("id") not in (None, email_id):
                raise _invalid("id does not match the path", "id")
            unknown = sorted(set(body) - {"id", "scheduled_at"})
            if unknown:
                raise _invalid(f"only scheduled_at can change; got {unknown[0]}", unknown[0])
            if body.get("scheduled_at") is None:
                raise SubmitError("MISSING_FIELD", "The `scheduled_at` field is missing.",
                                  "scheduled_at")  # fmt: skip
            now = clock.now()
            try:
                at = parse_natural_time(body["scheduled_at"], now, account.time_zone)
                horizon = horizon_of(account, True, MAX_HORIZON_SECONDS, "scheduled_at")
                due = When(at, "scheduled_at", RESEND_HORIZON_SECONDS).check(now, horizon)
            except ScheduleError as exc:
                raise SubmitError(exc.code, exc.message, exc.field) from exc
            await mail.reschedule(account, email_id, due)
        except SubmitError as exc:
            return _answer_error(exc)
        return JSONResponse({"object": "email", "id": email_id, "scheduled_at": iso(due)})

    @router.post("/emails/{email_id}/cancel", responses=_RESPONSES)
    async def cancel(
        email_id: str, authorization: str | None = Header(default=None)
    ) -> JSONResponse:
        """Cancel a scheduled email."""
        try:
            account = resend_account(view, authorization)
            await mail.change(account, email_id, "cancelled", CancelRequested)
        except SubmitError as exc:
            return _answer_error(exc)
        return JSONResponse({"object": "email", "id": email_id})

    return router


def _body(schema: dict[str, Any], example: Any) -> dict[str, Any]:
    return {
        "required": True,
        "content": {"application/json": {"schema": schema, "example": example}},
    }


_ADDRESSES = {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]}
_EMAIL: dict[str, Any] = {
    "type": "object",
    "required": ["from", "to", "subject"],
    "properties": {
        "from": {"type": "string"},
        "to": {**_ADDRESSES, "description": f"at most {MAX_RECIPIENTS}"},
        "cc": _ADDRESSES,
        "bcc": _ADDRESSES,
        "reply_to": _ADDRESSES,
        "subject": {"type": "string"},
        "html": {"type": "string"},
        "text": {"type": "string"},
        "headers": {"type": "object", "additionalProperties": {"type": "string"}},
        "attachments": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["filename", "content"],
                "properties": {
                    "filename": {"type": "string"},
                    "content": {"type": "string", "description": "base64"},
                    "content_type": {"type": "string"},
                },
            },
        },
        "tags": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name"],
                "properties": {"name": {"type": "string"}, "value": {"type": "string"}},
            },
        },
        "scheduled_at": {
            "type": "string",
            "description": "ISO 8601 or natural language ('in 1 hour', 'tomorrow at 9am'); "
            "the account's time zone when it names none; at most 30 days ahead",
        },
    },
}
_EXAMPLE = {
    "from": "Hello <hello@example.com>",
    "to": ["user@example.org"],
    "subject": "Reminder",
    "text": "See you tomorrow.",
    "scheduled_at": "tomorrow at 9am",
}
_ERROR = {"description": "Resend's error shape: {statusCode, name, message} (and code)"}
_RESPONSES: dict[int | str, dict[str, Any]] = {
    **{status: _ERROR for status in (401, 403, 404, 409, 422, 503)},
}
