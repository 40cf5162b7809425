"""The public HTTP API (FastAPI): ``POST /email`` (JetEmail-compatible), ``/healthz``,
``/metrics``, and the OpenAPI document at ``/openapi.json``."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any, Protocol

from fastapi import APIRouter, FastAPI, Header, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException

from kairos.clock import Clock, to_datetime
from kairos.logging import get_logger
from kairos.metrics import REJECTED, count
from kairos.refdata.admin import install_error_handler
from schemas.events import Scheduled
from schemas.reference import AccountState, BatchState, DomainState, SuppressionState
from services.ingest.checks import check_account, check_message, horizon_of
from services.ingest.compose import EmailRequest, SubmitError, check_unicode, compose, error_body
from services.ingest.idempotency import MAX_KEY_LENGTH, IdempotencyLog, body_digest
from services.ingest.publish import Publisher, PublishError
from services.ingest.scanners import Scanning
from services.ingest.schedule import MAX_HORIZON_SECONDS, ScheduleError, resolve_scheduled_at

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


def error_for(path: str, status: int, code: str, message: str, field: str | None) -> JSONResponse:
    """An error in the shape of the API that ``path`` belongs to: SendGrid's under ``/v3``,
    ``{"error": {"code", "message", "field"}}`` everywhere else."""
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

    def domain(self, account_id: str, domain: str) -> DomainState | None: ...

    def suppression(self, account_id: str, address: str) -> SuppressionState | None: ...

    def batch(self, account_id: str, batch_id: str) -> BatchState | None: ...


def create_app(
    publisher: Publisher,
    clock: Clock,
    view: AccountLookup,
    admin: APIRouter | None = None,
    idempotency: IdempotencyLog | None = None,
    routers: Sequence[APIRouter] = (),
    scanning: Scanning | None = None,
) -> FastAPI:
    """The ingest HTTP application: the public API (Bearer API key) and, when given, the
    admin API."""
    app = FastAPI(
        title="Kairos",
        version="1",
        description="Scheduled email: submit now, deliver at the second you name.",
    )

    install_error_shapes(app)
    if admin is not None:
        app.include_router(admin)
    for router in routers:
        app.include_router(router)
    install_error_handler(app)

    @app.get("/healthz", tags=["operations"])
    async def healthz() -> JSONResponse:
        ok = publisher.ready() and view.caught_up
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
        now = clock.now()
        key = (authorization or "").removeprefix("Bearer ").strip()
        message_id = str(uuid.uuid4())
        try:
            account = check_account(view.authenticate(key) if key else None)
            check_unicode(body)
        except SubmitError as exc:
            return _error(exc.status, exc.code, exc.message, exc.field)
        claimed = False
        deadline: float | None = None
        if idempotency_key is not None and idempotency is not None:
            if not 1 <= len(idempotency_key) <= MAX_KEY_LENGTH:
                return _error(
                    400, "INVALID_IDEMPOTENCY_KEY", "1 to 256 characters", "Idempotency-Key"
                )
            try:
                decision = await idempotency.claim(
                    account.account_id, idempotency_key, body_digest(body), message_id
                )
            except SubmitError as exc:  # IdempotencyUnavailable: 503 BROKER_UNAVAILABLE
                return _error(exc.status, exc.code, exc.message, exc.field)
            if decision.kind == "replay" and decision.response is not None:
                return JSONResponse(
                    decision.response["body"], status_code=decision.response["status"]
                )
            if decision.kind == "mismatch":
                return _error(
                    409,
                    "IDEMPOTENCY_BODY_MISMATCH",
                    "this key was used with a different body",
                    "Idempotency-Key",
                )
            if decision.kind == "in_flight":
                return _error(
                    409,
                    "IDEMPOTENCY_IN_FLIGHT",
                    "a request with this key is still in flight",
                    "Idempotency-Key",
                )
            claimed, deadline = True, decision.expires_at
        try:
            status, answer = await submit(account, body, now, message_id, deadline)
        except SubmitError as exc:
            if claimed and idempotency is not None and idempotency_key is not None:
                await idempotency.release(account.account_id, idempotency_key, message_id)
            return _error(exc.status, exc.code, exc.message, exc.field)
        if claimed and idempotency is not None and idempotency_key is not None:
            await idempotency.complete(
                account.account_id, idempotency_key, message_id, {"status": status, "body": answer}
            )
        return JSONResponse(answer, status_code=status)

    async def submit(
        account: AccountState,
        body: dict[str, Any],
        now: float,
        message_id: str,
        deadline: float | None = None,
    ) -> tuple[int, dict[str, Any]]:
        """Validate, compose and publish one submission; SubmitError for any refusal.
        ``deadline``: when this request's idempotency claim stops holding its key; past it,
        another request may have the key, so this one must not publish."""
        try:
            req = EmailRequest.model_validate(body)
        except ValidationError as exc:
            first = exc.errors()[0]
            field = ".".join(str(p) for p in first["loc"]) or None
            raise SubmitError("INVALID_REQUEST", first["msg"], field) from exc
        scheduled = any(body.get(k) is not None for k in ("scheduledAt", "scheduled_at"))
        try:
            horizon = horizon_of(account, scheduled, MAX_HORIZON_SECONDS)
            due = resolve_scheduled_at(body, now, horizon)
        except ScheduleError as exc:
            raise SubmitError(exc.code, exc.message, exc.field) from exc
        content = compose(req, message_id)
        check_message(account, content, view)
        if scanning is not None:
            await scanning.check(content.raw())
        event = Scheduled(
            occurred_at=to_datetime(now),
            account_id=account.account_id,
            message_id=message_id,
            due_at=due if due is not None else int(now),
            submitted_at=to_datetime(now),
            source="http",
            content=content,
        )
        if deadline is not None and clock.now() >= deadline:
            raise SubmitError(
                "IDEMPOTENCY_CLAIM_EXPIRED",
                "the request took longer than its idempotency claim holds; retry",
                "Idempotency-Key",
                503,
            )
        try:
            await publisher.publish(event)
        except PublishError as exc:
            log.warning("publish failed", message_id=message_id, error=str(exc))
            raise SubmitError(
                "BROKER_UNAVAILABLE", "could not store the message; retry", None, 503
            ) from exc
        count("ingest", "scheduled")
        if due is None:
            return 201, {"id": message_id, "response": f"Queued as {message_id}"}
        return 202, {
            "id": message_id,
            "scheduled_at": due,
            "response": f"Scheduled as {message_id} for {due}",
        }

    return app
