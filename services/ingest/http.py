"""The public HTTP API (FastAPI): ``POST /email`` (JetEmail-compatible), ``/healthz``,
``/metrics``, and the OpenAPI document at ``/openapi.json``."""

from __future__ import annotations

import email.utils
import re
from collections.abc import Callable, Sequence
from dataclasses import replace
from functools import partial
from typing import Any, Protocol

from fastapi import APIRouter, FastAPI, Header, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from kairos import tracing
from kairos.logging import get_logger
from kairos.metrics import REJECTED
from schemas.reference import AccountState, BatchState, DomainState, SuppressionState
from services.ingest.compose import (
    EmailRequest,
    SubmitError,
    check_line,
    check_unicode,
    compose,
    error_body,
)
from services.ingest.idempotency import body_digest
from services.ingest.mailgun import mailgun_error
from services.ingest.manage import authenticate
from services.ingest.resend import from_submit
from services.ingest.schedule import (
    LocalWhen,
    PassedPolicy,
    Requested,
    ScheduleError,
    check_zone,
    local_request,
    requested_at,
)
from services.ingest.spread import read_spread
from services.ingest.submit import Accepted, Draft, Submission, Submitter
from services.reference.admin import install_error_handler

log = get_logger("kairos.ingest")


class MessageAnswer(BaseModel):
    id: str
    to: list[str]
    scheduled_at: int | None = Field(description="Its own due second (null: sent at once).")


class RejectedAnswer(BaseModel):
    id: str = Field(description="The message id its failed outcome is recorded under.")
    to: list[str]
    reason: str = Field(description="Stable reason: local_time_passed.")


class ScheduledResponse(BaseModel):
    id: str
    response: str
    scheduled_at: int
    messages: list[MessageAnswer] | None = Field(
        default=None,
        description="Every message, when the request became several (recipients in several "
        "time zones) or was spread, or some recipients were rejected.",
    )
    rejected: list[RejectedAnswer] | None = Field(
        default=None,
        description="Recipients not scheduled (their local time had passed, ifPassed: skip).",
    )


class RecipientIn(BaseModel):
    """A recipient with its own time zone (for ``sendAt.local``)."""

    model_config = ConfigDict(extra="forbid")

    email: str
    name: str | None = None
    timezone: str | None = Field(
        default=None, description="IANA time zone of this recipient, e.g. Asia/Kolkata."
    )


class LocalSendAt(BaseModel):
    """A wall time in the recipients' zones instead of an instant."""

    model_config = ConfigDict(extra="forbid")

    local: str = Field(
        description="Wall time without an offset: 2026-12-24T09:00:00, or 09:00:00 (today in "
        "each zone). A time skipped by a DST change moves to the end of the gap; a time that "
        "occurs twice is its first occurrence."
    )
    timezone: str | None = Field(
        default=None,
        description="IANA zone for recipients that name none; unset: the account's default "
        "zone, else UTC.",
    )
    ifPassed: PassedPolicy | None = Field(
        default=None,
        description="When the time has passed in a zone: next_day (default: the same wall "
        "time the next day), send_now, or skip (its recipients are rejected, reason "
        "local_time_passed).",
    )


class EmailBody(EmailRequest):
    """The body of ``POST /email``: JetEmail's fields and Kairos's extensions."""

    to: str | list[str | RecipientIn]  # type: ignore[assignment]
    sendAt: LocalSendAt | None = None
    deliverWithin: int | None = Field(
        default=None,
        description="Spread the messages evenly over this many seconds after their time, each "
        "by its id (1 to 86400).",
    )
    maxPerMinute: int | None = Field(
        default=None, description="Spread the messages so that at most this many are due a minute."
    )
    listUnsubscribe: bool | None = Field(
        default=None,
        description="RFC 8058 one-click unsubscribe headers (one recipient per message); "
        "unset: the account's setting.",
    )


class SentResponse(BaseModel):
    id: str
    response: str


class ErrorDetail(BaseModel):
    code: str
    message: str
    field: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail


def _inline_schema(model: type[BaseModel]) -> dict[str, Any]:
    """A model's JSON Schema with its ``$defs`` inlined (valid inside an OpenAPI document)."""
    schema = model.model_json_schema(by_alias=True)
    defs = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/$defs/"):
                return inline(defs[ref.removeprefix("#/$defs/")])
            return {k: inline(v) for k, v in node.items()}
        if isinstance(node, list):
            return [inline(v) for v in node]
        return node

    result: dict[str, Any] = inline(schema)
    return result


def _error(status: int, code: str, message: str, field: str | None) -> JSONResponse:
    REJECTED.labels("http", code).inc()
    return JSONResponse(error_body(code, message, field), status_code=status)


#: Mailgun's paths under ``/v3`` (every other ``/v3`` path is SendGrid's).
_MAILGUN_PATH = re.compile(r"^/v3/[^/]+/messages(?:\.mime)?/?$")


def error_for(path: str, status: int, code: str, message: str, field: str | None) -> JSONResponse:
    """An error in the shape of the API that ``path`` belongs to: Resend's under ``/emails``,
    Mailgun's for ``/v3/{domain}/messages``, SendGrid's elsewhere under ``/v3``,
    ``{"error": {"code", "message", "field"}}`` everywhere else."""
    if path == "/emails" or path.startswith("/emails/"):
        return from_submit(SubmitError(code, message, field, status))
    if _MAILGUN_PATH.match(path):
        return mailgun_error(status, message, code)
    if path == "/v3" or path.startswith("/v3/"):
        REJECTED.labels("sendgrid", code).inc()
        return JSONResponse(
            {"errors": [{"message": message, "field": field, "help": code}]}, status_code=status
        )
    return _error(status, code, message, field)


#: Stable codes of the errors the framework raises before a handler runs.
_HTTP_CODES = {
    400: "INVALID_REQUEST",
    401: "UNAUTHORIZED",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    413: "MESSAGE_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
}


class TraceContext:
    """A client's ``traceparent`` continues into the submission's trace. Plain ASGI: a
    ``@app.middleware("http")`` function runs every request in a task and streams of its own,
    which cost more CPU than the handler of a small request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        value = next((v for k, v in scope["headers"] if k == b"traceparent"), None)
        token = tracing.incoming.set(None if value is None else value.decode("latin-1"))
        try:
            await self.app(scope, receive, send)
        finally:
            tracing.incoming.reset(token)


def install_error_shapes(app: FastAPI) -> None:
    """Every error the framework answers (a body that is not JSON or not an object, a query
    parameter of the wrong type, an unknown path or method) in the documented shape with a
    stable code, and an unforeseen exception as a bare 500 ``INTERNAL`` (logged, its text
    never sent)."""

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0] if errors else {"loc": (), "msg": "invalid request", "type": ""}
        loc = [str(p) for p in first.get("loc", ()) if p != "body"]
        if first.get("type") == "json_invalid":
            message = "the request body is not valid JSON"
        else:
            message = str(first.get("msg", "invalid request"))
        return error_for(request.url.path, 400, "INVALID_REQUEST", message, ".".join(loc) or None)

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> Response:
        code = _HTTP_CODES.get(
            exc.status_code, "INVALID_REQUEST" if exc.status_code < 500 else "INTERNAL"
        )
        message = exc.detail if isinstance(exc.detail, str) else "invalid request"
        response = error_for(request.url.path, exc.status_code, code, message, None)
        for name, value in (exc.headers or {}).items():
            response.headers[name] = value
        return response

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled error", path=request.url.path, error=repr(exc), exc_info=exc)
        return error_for(request.url.path, 500, "INTERNAL", "internal error", None)


class AccountLookup(Protocol):
    """The reference view, as the HTTP API uses it."""

    @property
    def caught_up(self) -> bool: ...

    def authenticate(self, api_key: str) -> AccountState | None: ...

    def account(self, account_id: str) -> AccountState | None: ...

    def domain(self, account_id: str, domain: str) -> DomainState | None: ...

    def suppression(self, account_id: str, address: str) -> SuppressionState | None: ...

    def batch(self, account_id: str, batch_id: str) -> BatchState | None: ...


def email_submission(
    account: AccountState | None, body: dict[str, Any], idempotency_key: str | None
) -> Submission:
    """A ``POST /email`` body read into a submission (pure); SubmitError for a body that is
    not one."""
    check_unicode(body)
    try:
        when: Requested | None = requested_at(body)
        if body.get("sendAt") is not None:
            if when is not None:
                raise ScheduleError(
                    "SCHEDULED_AT_CONFLICT", "give sendAt or scheduledAt, not both", "sendAt"
                )
            when = local_request(body["sendAt"])
        groups = recipient_zones(body.get("to"), isinstance(when, LocalWhen))
        req = EmailBody.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or None
        raise SubmitError("INVALID_REQUEST", first["msg"], field) from exc
    except ScheduleError as exc:
        raise SubmitError(exc.code, exc.message, exc.field) from exc
    if len(groups) > 1 and (req.cc or req.bcc):
        raise SubmitError(
            "LOCAL_TIME_WITH_CC",
            "recipients in several time zones become one message per zone; cc and bcc "
            "cannot be shared between them",
            "cc",
        )
    common = {k: v for k, v in body.items() if k not in _EXTENSIONS}
    drafts = []
    for zone, to in groups.items():
        each = EmailRequest.model_validate({**common, "to": to})
        request = when
        if isinstance(when, LocalWhen) and zone is not None:
            request = replace(when, zone=zone)
        drafts.append(Draft(partial(compose, each), request))
    return Submission(
        account,
        "http",
        drafts,
        idempotency_key=idempotency_key,
        digest=body_digest(body),
        spread=read_spread(body.get("deliverWithin"), body.get("maxPerMinute"),
                           ("deliverWithin", "maxPerMinute")),
        list_unsubscribe=_flag(body.get("listUnsubscribe"), "listUnsubscribe"),
    )  # fmt: skip


#: The fields of ``POST /email`` that are Kairos's own (not JetEmail's).
_EXTENSIONS = frozenset({"to", "sendAt", "deliverWithin", "maxPerMinute", "listUnsubscribe"})


def _flag(value: Any, field: str) -> bool | None:
    if value is not None and not isinstance(value, bool):
        raise SubmitError("INVALID_REQUEST", "must be true or false", field)
    return value


def recipient_zones(to: Any, local: bool) -> dict[str | None, list[str]]:
    """The ``to`` of a ``POST /email`` body grouped by recipient time zone (pure; None: the
    request's zone), each recipient as an address string. A recipient may be an object with
    ``email``, ``name`` and ``timezone``; a timezone needs a local ``sendAt``
    (``TIMEZONE_WITHOUT_LOCAL_TIME``)."""
    items = to if isinstance(to, list) else [to]
    groups: dict[str | None, list[str]] = {}
    for i, item in enumerate(items):
        field = f"to[{i}]"
        if not isinstance(item, dict):
            groups.setdefault(None, []).append(item)
            continue
        address, name, zone = item.get("email"), item.get("name"), item.get("timezone")
        if not isinstance(address, str) or (name is not None and not isinstance(name, str)):
            raise SubmitError("INVALID_REQUEST", "a recipient is {email, name, timezone}", field)
        if set(item) - {"email", "name", "timezone"}:
            raise SubmitError("INVALID_REQUEST", "a recipient is {email, name, timezone}", field)
        if zone is not None and not local:
            raise SubmitError(
                "TIMEZONE_WITHOUT_LOCAL_TIME",
                "a recipient's timezone needs sendAt: {local: ...}",
                f"{field}.timezone",
            )
        zone = check_zone(zone, f"{field}.timezone") if zone is not None else None
        check_line(address, f"{field}.email")
        try:
            text = email.utils.formataddr((name, address)) if name else address
        except UnicodeEncodeError as exc:  # formataddr takes only an ASCII address
            raise SubmitError(
                "INVALID_ADDRESS", f"{address[:60]!r} is not an email address", f"{field}.email"
            ) from exc
        groups.setdefault(zone, []).append(text)
    return groups


def email_answer(accepted: Accepted) -> JSONResponse:
    """201 for an immediate send, 202 with the due second for a scheduled one (the first
    message's; with several messages or rejected recipients, each under ``messages`` and
    ``rejected``)."""
    message_id, due = accepted.ids[0], accepted.dues[0]
    if due is None:
        answer: dict[str, Any] = {"id": message_id, "response": f"Queued as {message_id}"}
    else:
        answer = {
            "id": message_id,
            "scheduled_at": due,
            "response": f"Scheduled as {message_id} for {due}",
        }
    if len(accepted.ids) > 1 or accepted.rejected:
        answer["messages"] = accepted.messages()
        answer["rejected"] = [r.json() for r in accepted.rejected]
    scheduled = any(d is not None for d in accepted.dues)
    response = JSONResponse(answer, status_code=202 if scheduled else 201)
    if accepted.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return response


def create_app(
    submitter: Submitter,
    view: AccountLookup,
    ready: Callable[[], bool],
    admin: APIRouter | None = None,
    routers: Sequence[APIRouter] = (),
) -> FastAPI:
    """The ingest HTTP application: the public API (Bearer API key) and, when given, the
    admin API. ``ready``: whether the service can make a submission durable now."""
    app = FastAPI(
        title="Kairos",
        version="1",
        description="Scheduled email: submit now, deliver at the second you name.",
    )

    install_error_shapes(app)

    app.add_middleware(TraceContext)

    install_error_handler(app)

    @app.get("/healthz", tags=["operations"])
    async def healthz() -> JSONResponse:
        ok = ready() and view.caught_up
        return JSONResponse({"status": "ok" if ok else "starting"}, status_code=200 if ok else 503)

    @app.get("/metrics", tags=["operations"], response_class=Response)
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    @app.post(
        "/email",
        status_code=202,
        tags=["email"],
        responses={
            201: {"model": SentResponse, "description": "Accepted for immediate sending"},
            202: {"model": ScheduledResponse, "description": "Scheduled"},
            400: {"model": ErrorResponse, "description": "Invalid request"},
            401: {"model": ErrorResponse, "description": "Missing or unknown API key"},
            403: {
                "model": ErrorResponse,
                "description": "Account disabled, domain not "
                "owned or not verified, scheduling not allowed by the plan",
            },
            409: {
                "model": ErrorResponse,
                "description": "Idempotency key in flight or used with another body",
            },
            413: {"model": ErrorResponse, "description": "Message too large"},
            503: {"model": ErrorResponse, "description": "Not durable yet; retry"},
        },
        # the body is validated by hand (for stable error codes); document its shape
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": _inline_schema(EmailBody),
                        "example": {
                            "from": "Hello <hello@example.com>",
                            "to": "user@example.org",
                            "subject": "Reminder",
                            "text": "This arrives at the scheduled second.",
                            "scheduledAt": "2030-01-01T09:00:00Z",
                        },
                    }
                },
            }
        },
    )
    async def send_email(
        body: dict[str, Any],
        authorization: str | None = Header(default=None),
        idempotency_key: str | None = Header(default=None),
    ) -> JSONResponse:
        """Send an email now, or at ``scheduledAt`` (unix seconds or RFC 3339 with offset).

        With an ``Idempotency-Key``, a retry of the same body answers what the first request
        answered (even after its time has passed), and creates no second message."""
        try:
            account = authenticate(view, authorization)
            submission = email_submission(account, body, idempotency_key)
            return email_answer(await submitter.submit(submission))
        except SubmitError as exc:
            return _error(exc.status, exc.code, exc.message, exc.field)

    # after POST /email: routes are matched in turn, and the busiest goes first
    if admin is not None:
        app.include_router(admin)
    for router in routers:
        app.include_router(router)
    return app
