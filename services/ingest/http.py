"""The public HTTP API (FastAPI): ``POST /email`` (JetEmail-compatible), ``/healthz``,
``/metrics``, and the OpenAPI document at ``/openapi.json``."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from fastapi import APIRouter, FastAPI, Header, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException

from kairos import tracing
from kairos.logging import get_logger
from kairos.metrics import REJECTED
from schemas.reference import AccountState, BatchState, DomainState, SuppressionState
from services.ingest.compose import EmailRequest, SubmitError, check_unicode, compose, error_body
from services.ingest.idempotency import body_digest
from services.ingest.mailgun import mailgun_error
from services.ingest.manage import authenticate
from services.ingest.resend import from_submit
from services.ingest.schedule import ScheduleError, requested_at
from services.ingest.submit import Accepted, Draft, Submission, Submitter
from services.reference.admin import install_error_handler

log = get_logger("kairos.ingest")


class ScheduledResponse(BaseModel):
    id: str
    response: str
    scheduled_at: int


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
        req = EmailRequest.model_validate(body)
        when = requested_at(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or None
        raise SubmitError("INVALID_REQUEST", first["msg"], field) from exc
    except ScheduleError as exc:
        raise SubmitError(exc.code, exc.message, exc.field) from exc
    return Submission(
        account,
        "http",
        [Draft(lambda message_id: compose(req, message_id), when)],
        idempotency_key=idempotency_key,
        digest=body_digest(body),
    )


def email_answer(accepted: Accepted) -> JSONResponse:
    """201 for an immediate send, 202 with the due second for a scheduled one."""
    message_id, due = accepted.ids[0], accepted.dues[0]
    if due is None:
        answer: dict[str, Any] = {"id": message_id, "response": f"Queued as {message_id}"}
    else:
        answer = {
            "id": message_id,
            "scheduled_at": due,
            "response": f"Scheduled as {message_id} for {due}",
        }
    response = JSONResponse(answer, status_code=201 if due is None else 202)
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

    @app.middleware("http")
    async def trace_context(request: Request, call_next: Any) -> Response:
        """A client's ``traceparent`` continues into the submission's trace."""
        token = tracing.incoming.set(request.headers.get("traceparent"))
        try:
            response: Response = await call_next(request)
            return response
        finally:
            tracing.incoming.reset(token)

    if admin is not None:
        app.include_router(admin)
    for router in routers:
        app.include_router(router)
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
                        "schema": _inline_schema(EmailRequest),
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

    return app
