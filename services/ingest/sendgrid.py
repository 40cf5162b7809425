"""SendGrid v3 compatibility: enough of ``/v3`` that the official ``sendgrid`` library works
against Kairos when given ``host=``.

* ``POST /v3/mail/send``: personalizations (each its own message), top-level and
  per-personalization ``send_at`` (SendGrid's 72 h limit, never in the past), ``batch_id``;
  202 with ``X-Message-Id``. ``mail_settings.sandbox_mode`` validates without sending.
* ``POST /v3/mail/batch`` creates a batch id (valid 10 days); ``GET /v3/mail/batch/{id}``
  validates one.
* ``/v3/user/scheduled_sends``: pause or cancel a batch, list, switch, remove a pause.

Errors have SendGrid's shape: ``{"errors": [{"message", "field", "help"}]}``. Everything is
scoped to the API key's account: another account's batch is an invalid batch id.
"""

from __future__ import annotations

import asyncio
import email.utils
import secrets
from collections.abc import Iterable
from datetime import datetime
from functools import partial
from typing import Any, Literal, Protocol

from fastapi import APIRouter, Header, Request
from fastapi.responses import JSONResponse, Response

from kairos.clock import Clock, to_datetime
from kairos.logging import get_logger
from kairos.metrics import REJECTED
from kairos.settings import KairosSettings
from schemas.reference import AccountState, BatchState
from services.ingest.compose import EmailRequest, SubmitError, check_line, check_unicode, compose
from services.ingest.idempotency import body_digest
from services.ingest.manage import authenticate
from services.ingest.schedule import (
    LocalWhen,
    Requested,
    ScheduleError,
    When,
    check_policy,
    check_zone,
    parse_local,
)
from services.ingest.spread import read_spread
from services.ingest.submit import BATCH_VALIDITY, Draft, Submission, Submitter, live_batch
from services.reference.commands import Record

#: SendGrid's scheduling limit on this API.
SENDGRID_HORIZON_SECONDS = 72 * 3600
MAX_PERSONALIZATIONS = 1000
#: Open batch ids an account may hold at once (the setting's default).
OPEN_BATCH_LIMIT: int = KairosSettings.model_fields["open_batch_limit"].default
log = get_logger("kairos.ingest.sendgrid")
#: Kairos's extensions of the body: a local wall time (in ``custom_args.timezone``) and what
#: to do when it has passed, spreading the messages, one-click unsubscribe headers.
_EXTENSIONS = {
    "send_at_local", "if_passed", "deliver_within", "max_per_minute", "list_unsubscribe",
}  # fmt: skip
#: Accepted and ignored: they change nothing about when or whether a message is sent
#: (``custom_args.timezone`` is read only with ``send_at_local``).
_IGNORED = {
    "categories",
    "custom_args",
    "tracking_settings",
    "asm",
    "ip_pool_name",
    "reply_to_list",
}


class BatchStore(Protocol):
    """The reference view (batches) and its writer, as this API uses them."""

    def batch(self, account_id: str, batch_id: str) -> BatchState | None: ...

    def authenticate(self, api_key: str) -> AccountState | None: ...


class Writer(Protocol):
    async def apply(self, records: list[Record]) -> None: ...


class Broadcaster(Protocol):
    async def __call__(
        self, account_id: str, batch_id: str, action: Literal["cancel", "pause", "resume"]
    ) -> None: ...


def sg_error(status: int, message: str, field: str | None = None, code: str = "") -> JSONResponse:
    """An error in SendGrid's shape (plus Kairos's stable ``code`` as ``help``)."""
    REJECTED.labels("sendgrid", code or str(status)).inc()
    return JSONResponse(
        {"errors": [{"message": message, "field": field, "help": code or None}]},
        status_code=status,
    )


def _from_submit(exc: SubmitError) -> JSONResponse:
    return sg_error(exc.status, exc.message, exc.field, exc.code)


def _invalid(message: str, field: str) -> SubmitError:
    return SubmitError("INVALID_REQUEST", message, field)


def _string(value: Any, field: str) -> str:
    if not isinstance(value, str):
        raise _invalid(f"{field} must be a string", field)
    return value


def _object(value: Any, field: str) -> dict[str, Any]:
    """``value`` if it is an object; ``{}`` for null or absent."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _invalid(f"{field} must be an object", field)
    return value


def _list(value: Any, field: str) -> list[Any]:
    """``value`` if it is a list; ``[]`` for null or absent."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise _invalid(f"{field} must be a list", field)
    return value


def _address(value: Any, field: str) -> str:
    if not isinstance(value, dict) or not isinstance(value.get("email"), str):
        raise SubmitError("INVALID_REQUEST", "an object with an email is required", field)
    name = value.get("name")
    if name is not None and not isinstance(name, str):
        raise _invalid(f"{field}.name must be a string", f"{field}.name")
    check_line(value["email"], f"{field}.email")
    if name:
        check_line(name, f"{field}.name")
    if not name:
        return str(value["email"])
    try:
        return email.utils.formataddr((name, value["email"]))
    except UnicodeEncodeError as exc:  # formataddr takes only an ASCII address
        raise SubmitError(
            "INVALID_ADDRESS", f"{value['email']!r} is not an email address", f"{field}.email"
        ) from exc


def _addresses(values: Any, field: str) -> list[str] | None:
    if values is None:
        return None
    if not isinstance(values, list):
        raise SubmitError("INVALID_REQUEST", "a list of {email, name} objects is required", field)
    return [_address(v, f"{field}[{i}]") for i, v in enumerate(values)]


def _headers(value: Any, field: str) -> dict[str, str]:
    headers = _object(value, field)
    for name, v in headers.items():
        if not isinstance(v, str):
            raise _invalid("header values are strings", f"{field}.{name}")
    return headers


def _send_at(value: Any, field: str) -> When | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise SubmitError("SCHEDULED_AT_INVALID", "send_at must be a unix timestamp", field)
    return When(value, field, SENDGRID_HORIZON_SECONDS)


def personalizations(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The personalizations of a ``/v3/mail/send`` body: 1 to 1000 objects."""
    people = body.get("personalizations")
    if not isinstance(people, list) or not people:
        raise SubmitError("INVALID_REQUEST", "at least one personalization is required",
                          "personalizations")  # fmt: skip
    if len(people) > MAX_PERSONALIZATIONS:
        raise SubmitError(
            "TOO_MANY_RECIPIENTS",
            f"at most {MAX_PERSONALIZATIONS} personalizations",
            "personalizations",
        )
    for i, p in enumerate(people):
        if not isinstance(p, dict):
            raise SubmitError("INVALID_REQUEST", "a personalization is an object",
                              f"personalizations[{i}]")  # fmt: skip
    return people


def sandboxed(body: dict[str, Any]) -> bool:
    """``mail_settings.sandbox_mode.enable``: validate, do not send."""
    settings = _object(body.get("mail_settings"), "mail_settings")
    sandbox = _object(settings.get("sandbox_mode"), "mail_settings.sandbox_mode")
    enable = sandbox.get("enable", False)
    if not isinstance(enable, bool):
        raise _invalid("must be a boolean", "mail_settings.sandbox_mode.enable")
    return enable


def _local(value: Any, if_passed: Any, zone: Any, fields: tuple[str, str]) -> LocalWhen:
    """``send_at_local`` (a Kairos extension: a wall time) in ``zone`` (None: the account's
    default zone). ``fields``: where the time and the zone came from."""
    try:
        day, wall = parse_local(value, fields[0])
        return LocalWhen(
            wall,
            day,
            check_zone(zone, fields[1]) if zone is not None else None,
            check_policy(if_passed, "if_passed"),
            fields[0],
            SENDGRID_HORIZON_SECONDS,
        )
    except ScheduleError as exc:
        raise SubmitError(exc.code, exc.message, exc.field) from exc


def personalize(body: dict[str, Any]) -> list[tuple[EmailRequest, Requested | None]]:
    """The messages of a ``/v3/mail/send`` body: one per personalization, with the time it
    asks for (None: now; judged against the clock by the submission core). Raises SubmitError
    for anything SendGrid would refuse (a field of the wrong type is ``INVALID_REQUEST``
    naming it), and for what Kairos cannot honour (templates, ``send_each_at``)."""
    check_unicode(body)
    for unsupported in ("template_id", "send_each_at"):
        if body.get(unsupported) is not None:
            raise SubmitError(
                "UNSUPPORTED_FIELD", f"{unsupported} is not supported by Kairos", unsupported
            )
    known = {
        "personalizations", "from", "reply_to", "subject", "content", "attachments",
        "headers", "send_at", "batch_id", "mail_settings", *_IGNORED, *_EXTENSIONS,
    }  # fmt: skip
    for name in body:
        if name not in known:
            raise SubmitError("INVALID_REQUEST", f"unknown field {name}", name)
    people = personalizations(body)
    sandboxed(body)
    sender = _address(body.get("from"), "from")
    reply_to = _address(body["reply_to"], "reply_to") if body.get("reply_to") else None
    text = html = None
    for i, part in enumerate(_list(body.get("content"), "content")):
        kind = part.get("type") if isinstance(part, dict) else None
        value = part.get("value", "") if isinstance(part, dict) else None
        if kind in ("text/plain", "text/html") and not isinstance(value, str):
            raise _invalid("content values are strings", f"content[{i}].value")
        if kind == "text/plain":
            text = value
        elif kind == "text/html":
            html = value
        else:
            raise SubmitError(
                "INVALID_REQUEST", "content types are text/plain and text/html",
                f"content[{i}].type",
            )  # fmt: skip
    attachments = []
    for i, a in enumerate(_list(body.get("attachments"), "attachments")):
        field = f"attachments[{i}]"
        a = _object(a, field)
        attachments.append(
            {
                "filename": _string(a.get("filename", f"attachment-{i}"), f"{field}.filename"),
                "content": _string(a.get("content", ""), f"{field}.content"),
                "contentType": _string(a.get("type") or "application/octet-stream",
                                       f"{field}.type"),
            }
        )  # fmt: skip
    common_headers = _headers(body.get("headers"), "headers")
    top_subject = body.get("subject")
    if top_subject is not None:
        _string(top_subject, "subject")
    top_due = _send_at(body.get("send_at"), "send_at")
    top_args = _object(body.get("custom_args"), "custom_args")
    out = []
    for i, p in enumerate(people):
        field = f"personalizations[{i}]"
        to = _addresses(p.get("to"), f"{field}.to")
        if not to:
            raise SubmitError("MISSING_RECIPIENT", "at least one to address", f"{field}.to")
        due: Requested | None = _send_at(p.get("send_at"), f"{field}.send_at")
        local = p.get("send_at_local", body.get("send_at_local"))
        if local is not None:
            if due is not None or top_due is not None:
                raise SubmitError(
                    "SCHEDULED_AT_CONFLICT", "give send_at or send_at_local, not both",
                    "send_at_local",
                )  # fmt: skip
            args = _object(p.get("custom_args"), f"{field}.custom_args")
            zone = args.get("timezone", top_args.get("timezone"))
            where = f"{field}.custom_args" if "timezone" in args else "custom_args"
            at = f"{field}.send_at_local" if "send_at_local" in p else "send_at_local"
            due = _local(local, body.get("if_passed"), zone, (at, f"{where}.timezone"))
        subject = p.get("subject", top_subject)
        if not subject:
            raise SubmitError("INVALID_REQUEST", "a subject is required", "subject")
        subject = _string(subject, f"{field}.subject")
        headers = {**common_headers, **_headers(p.get("headers"), f"{field}.headers")}
        try:
            req = EmailRequest.model_validate(
                {
                    "from": sender,
                    "to": to,
                    "cc": _addresses(p.get("cc"), f"{field}.cc"),
                    "bcc": _addresses(p.get("bcc"), f"{field}.bcc"),
                    "reply_to": reply_to,
                    "subject": subject,
                    "text": text,
                    "html": html,
                    "headers": headers or None,
                    "attachments": attachments or None,
                }
            )
        except ValueError as exc:
            raise SubmitError("INVALID_REQUEST", str(exc).splitlines()[0], field) from exc
        out.append((req, due if due is not None else top_due))
    return out


def mail_submission(
    account: AccountState, body: dict[str, Any], idempotency_key: str | None = None
) -> Submission:
    """A ``/v3/mail/send`` body read into a submission (pure): one draft per personalization."""
    messages = personalize(body)
    batch_id = body.get("batch_id")
    if batch_id is not None and not isinstance(batch_id, str):
        raise SubmitError("INVALID_BATCH_ID", "invalid batch id", "batch_id")
    unsubscribe = body.get("list_unsubscribe")
    if unsubscribe is not None and not isinstance(unsubscribe, bool):
        raise _invalid("must be true or false", "list_unsubscribe")
    return Submission(
        account,
        "sendgrid",
        [Draft(partial(compose, req), when) for req, when in messages],
        batch_id=batch_id,
        idempotency_key=idempotency_key,
        digest=body_digest(body),
        dry_run=sandboxed(body),
        spread=read_spread(
            body.get("deliver_within"), body.get("max_per_minute"),
            ("deliver_within", "max_per_minute"),
        ),
        list_unsubscribe=unsubscribe,
    )  # fmt: skip


def open_batches(batches: Iterable[BatchState], account_id: str, now: datetime) -> int:
    """How many batch ids of ``account_id`` are still valid at ``now`` (pure)."""
    return sum(
        1 for b in batches if b.account_id == account_id and now - b.created_at <= BATCH_VALIDITY
    )


def new_batch_id() -> str:
    """A batch id in SendGrid's style (URL-safe, opaque)."""
    return secrets.token_urlsafe(36)


def sendgrid_router(
    view: BatchStore,
    writer: Writer,
    broadcast: Broadcaster,
    submitter: Submitter,
    clock: Clock,
    open_batch_limit: int = OPEN_BATCH_LIMIT,
) -> APIRouter:
    """``/v3``: mail send (through ``submitter``), batch ids, scheduled sends. An account
    holds at most
    ``open_batch_limit`` valid batch ids (per replica exactly; replicas racing may each let
    one more through)."""
    router = APIRouter(prefix="/v3", tags=["sendgrid"])
    creating: dict[str, asyncio.Lock] = {}

    def valid_batch(account: AccountState, batch_id: str) -> BatchState | None:
        return live_batch(view, account.account_id, batch_id, clock.now())

    @router.post(
        "/mail/send",
        status_code=202,
        responses=_MAIL_SEND_RESPONSES,
        openapi_extra={"requestBody": _MAIL_SEND_BODY},
    )
    async def mail_send(
        request: Request,
        authorization: str | None = Header(default=None),
        idempotency_key: str | None = Header(default=None),
    ) -> Response:
        """Send now, or at ``send_at`` (at most 72 h ahead), optionally in a batch. Every
        personalization is accepted, or none is. With an ``Idempotency-Key`` (a Kairos
        extension), a retry of the same body is answered as the first one was."""
        try:
            account = authenticate(view, authorization)
        except SubmitError as exc:
            return sg_error(exc.status, _AUTH_MESSAGE, None, exc.code)
        try:
            body = await request.json()
        except ValueError:
            return sg_error(400, "the request body is not valid JSON", None, "INVALID_REQUEST")
        if not isinstance(body, dict):
            return sg_error(400, "the request body is an object", None, "INVALID_REQUEST")
        try:
            accepted = await submitter.submit(mail_submission(account, body, idempotency_key))
        except SubmitError as exc:
            return _from_submit(exc)
        if sandboxed(body):
            return Response(status_code=200)
        headers = {
            "X-Message-Id": accepted.ids[0],
            "X-Kairos-Message-Ids": ",".join(accepted.ids),
        }
        if accepted.rejected:  # their local time had passed (if_passed: skip)
            headers["X-Kairos-Rejected"] = ",".join(f"{r.id} {r.reason}" for r in accepted.rejected)
        if accepted.replayed:
            headers["Idempotent-Replayed"] = "true"
        return Response(status_code=202, headers=headers)

    @router.post(
        "/mail/batch",
        status_code=201,
        responses={
            429: {"description": "The account holds as many open batch ids as it may"},
            503: {"description": "Not durable yet; retry"},
        },
    )
    async def create_batch(authorization: str | None = Header(default=None)) -> JSONResponse:
        """A new batch id, valid for 10 days; 429 ``BATCH_LIMIT`` when the account already
        holds its limit of open (unexpired) batch ids."""
        try:
            account = authenticate(view, authorization)
        except SubmitError as exc:
            return sg_error(exc.status, _AUTH_MESSAGE, None, exc.code)
        # one creation at a time per account: the count must include the batch just written
        async with creating.setdefault(account.account_id, asyncio.Lock()):
            now = to_datetime(clock.now())
            known: dict[str, BatchState] = getattr(view, "batches", {})
            if open_batches(known.values(), account.account_id, now) >= open_batch_limit:
                return sg_error(
                    429,
                    f"at most {open_batch_limit} open batch ids per account; a batch id "
                    f"expires {BATCH_VALIDITY.days} days after its creation",
                    None,
                    "BATCH_LIMIT",
                )
            batch = BatchState(
                occurred_at=now,
                account_id=account.account_id,
                batch_id=new_batch_id(),
                created_at=now,
            )
            try:
                await writer.apply([Record("batches", batch.batch_id, batch)])
            except Exception as exc:  # the broker's errors are many: none is a yes
                log.warning("batch not stored", error=repr(exc))
                return sg_error(503, "could not store the batch; retry", None, "BROKER_UNAVAILABLE")
        return JSONResponse({"batch_id": batch.batch_id}, status_code=201)

    @router.get("/mail/batch/{batch_id}")
    async def validate_batch(
        batch_id: str, authorization: str | None = Header(default=None)
    ) -> JSONResponse:
        """200 with the id if it is a valid batch id of this account, 400 otherwise."""
        try:
            account = authenticate(view, authorization)
        except SubmitError as exc:
            return sg_error(exc.status, _AUTH_MESSAGE, None, exc.code)
        if valid_batch(account, batch_id) is None:
            return sg_error(400, "invalid batch id", None, "INVALID_BATCH_ID")
        return JSONResponse({"batch_id": batch_id})

    async def set_status(
        account: AccountState, batch: BatchState, status: Literal["pause", "cancel"] | None
    ) -> None:
        """Broadcast the batch command, then record the status; SubmitError 503 when the
        broker does not take either."""
        try:
            if status is None:
                await broadcast(account.account_id, batch.batch_id, "resume")
            else:
                await broadcast(account.account_id, batch.batch_id, status)
            now = to_datetime(clock.now())
            new = batch.model_copy(update={"status": status, "occurred_at": now})
            await writer.apply([Record("batches", batch.batch_id, new)])
        except Exception as exc:  # the broker's errors are many: none is a yes
            log.warning("batch status not stored", error=repr(exc))
            raise SubmitError(
                "BROKER_UNAVAILABLE", "could not store the status; retry", None, 503
            ) from exc

    def parse_status(body: Any) -> Literal["pause", "cancel"]:
        status = body.get("status") if isinstance(body, dict) else None
        if status not in ("pause", "cancel"):
            raise SubmitError("INVALID_REQUEST", "status must be pause or cancel", "status")
        return "pause" if status == "pause" else "cancel"

    @router.post("/user/scheduled_sends", status_code=201)
    async def create_scheduled_send(
        body: dict[str, Any], authorization: str | None = Header(default=None)
    ) -> JSONResponse:
        """Pause or cancel every message of a batch."""
        try:
            account = authenticate(view, authorization)
        except SubmitError as exc:
            return sg_error(exc.status, _AUTH_MESSAGE, None, exc.code)
        try:
            status = parse_status(body)
            batch_id = body.get("batch_id")
            batch = valid_batch(account, batch_id) if isinstance(batch_id, str) else None
            if batch is None:
                raise SubmitError("INVALID_BATCH_ID", "invalid batch id", "batch_id")
            if batch.status is not None:
                raise SubmitError(
                    "BATCH_STATUS_EXISTS",
                    f"the batch is already {batch.status}; use PATCH to change it",
                    "batch_id",
                )
            await set_status(account, batch, status)
        except SubmitError as exc:
            return _from_submit(exc)
        return JSONResponse({"batch_id": batch.batch_id, "status": status}, status_code=201)

    @router.get("/user/scheduled_sends")
    async def list_scheduled_sends(
        authorization: str | None = Header(default=None),
    ) -> JSONResponse:
        """Every batch of the account with a pause or cancel status."""
        try:
            account = authenticate(view, authorization)
        except SubmitError as exc:
            return sg_error(exc.status, _AUTH_MESSAGE, None, exc.code)
        batches: dict[str, BatchState] = getattr(view, "batches", {})
        return JSONResponse(
            [
                {"batch_id": b.batch_id, "status": b.status}
                for b in sorted(batches.values(), key=lambda b: b.created_at)
                if b.account_id == account.account_id and b.status is not None
            ]
        )

    async def with_status(
        batch_id: str, authorization: str | None
    ) -> tuple[AccountState, BatchState]:
        account = authenticate(view, authorization)
        batch = view.batch(account.account_id, batch_id)
        if batch is None or batch.status is None:
            raise SubmitError("NOT_FOUND", "no scheduled send for this batch id", None, 404)
        return account, batch

    @router.get("/user/scheduled_sends/{batch_id}")
    async def get_scheduled_send(
        batch_id: str, authorization: str | None = Header(default=None)
    ) -> JSONResponse:
        try:
            _, batch = await with_status(batch_id, authorization)
        except SubmitError as exc:
            return _from_submit(exc)
        return JSONResponse([{"batch_id": batch.batch_id, "status": batch.status}])

    @router.patch("/user/scheduled_sends/{batch_id}")
    async def update_scheduled_send(
        batch_id: str, body: dict[str, Any], authorization: str | None = Header(default=None)
    ) -> Response:
        """Switch a batch between pause and cancel (a cancelled batch stays cancelled)."""
        try:
            account, batch = await with_status(batch_id, authorization)
            status = parse_status(body)
            if batch.status == "cancel" and status == "pause":
                raise SubmitError("BATCH_CANCELLED", "a cancelled batch cannot be paused", "status")
            if status != batch.status:
                await set_status(account, batch, status)
        except SubmitError as exc:
            return _from_submit(exc)
        return Response(status_code=204)

    @router.delete("/user/scheduled_sends/{batch_id}")
    async def delete_scheduled_send(
        batch_id: str, authorization: str | None = Header(default=None)
    ) -> Response:
        """Remove a pause: the batch's messages go out at their times (at once if passed)."""
        try:
            account, batch = await with_status(batch_id, authorization)
            if batch.status == "cancel":
                raise SubmitError(
                    "BATCH_CANCELLED",
                    "a cancelled batch stays cancelled: its messages were cancelled when the "
                    "cancel was set",
                    "batch_id",
                )
            await set_status(account, batch, None)
        except SubmitError as exc:
            return _from_submit(exc)
        return Response(status_code=204)

    return router


_AUTH_MESSAGE = "The provided authorization grant is invalid, expired, or revoked"

_ADDRESS = {
    "type": "object",
    "required": ["email"],
    "properties": {"email": {"type": "string"}, "name": {"type": "string"}},
}
_ADDRESSES = {"type": "array", "items": _ADDRESS}
_HEADERS = {"type": "object", "additionalProperties": {"type": "string"}}
#: The documented shape of a ``/v3/mail/send`` body (validated by hand, for SendGrid's errors).
_SEND_AT_LOCAL = {
    "type": "string",
    "description": "Kairos: a local wall time (2026-12-24T09:00:00, or 09:00:00 for today) in "
    "custom_args.timezone (else the account's default zone); instead of send_at",
}
_MAIL_SEND_BODY = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["personalizations", "from"],
                "properties": {
                    "personalizations": {
                        "type": "array",
                        "minItems": 1,
                        "maxItems": MAX_PERSONALIZATIONS,
                        "items": {
                            "type": "object",
                            "required": ["to"],
                            "properties": {
                                "to": _ADDRESSES,
                                "cc": _ADDRESSES,
                                "bcc": _ADDRESSES,
                                "subject": {"type": "string"},
                                "headers": _HEADERS,
                                "send_at": {"type": "integer"},
                                "send_at_local": _SEND_AT_LOCAL,
                                "custom_args": {
                                    "type": "object",
                                    "additionalProperties": {"type": "string"},
                                    "description": "timezone: the IANA zone of this "
                                    "personalization's send_at_local (Kairos)",
                                },
                            },
                        },
                    },
                    "from": _ADDRESS,
                    "reply_to": _ADDRESS,
                    "subject": {"type": "string"},
                    "content": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["type", "value"],
                            "properties": {
                                "type": {"type": "string", "enum": ["text/plain", "text/html"]},
                                "value": {"type": "string"},
                            },
                        },
                    },
                    "attachments": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["content", "filename"],
                            "properties": {
                                "content": {"type": "string", "description": "base64"},
                                "filename": {"type": "string"},
                                "type": {"type": "string"},
                            },
                        },
                    },
                    "headers": _HEADERS,
                    "send_at": {"type": "integer"},
                    "send_at_local": _SEND_AT_LOCAL,
                    "if_passed": {
                        "type": "string",
                        "enum": ["next_day", "send_now", "skip"],
                        "description": "Kairos: when send_at_local has passed in a zone "
                        "(skipped ids in X-Kairos-Rejected)",
                    },
                    "deliver_within": {
                        "type": "integer",
                        "minimum": 1,
                        "maximum": 86400,
                        "description": "Kairos: spread the messages evenly over this many "
                        "seconds after their time, by message id",
                    },
                    "max_per_minute": {
                        "type": "integer",
                        "minimum": 1,
                        "description": "Kairos: at most this many messages due a minute",
                    },
                    "list_unsubscribe": {
                        "type": "boolean",
                        "description": "Kairos: RFC 8058 one-click unsubscribe headers",
                    },
                    "custom_args": {
                        "type": "object",
                        "additionalProperties": {"type": "string"},
                    },
                    "batch_id": {"type": "string"},
                    "mail_settings": {
                        "type": "object",
                        "properties": {
                            "sandbox_mode": {
                                "type": "object",
                                "properties": {"enable": {"type": "boolean"}},
                            }
                        },
                    },
                },
            },
            "example": {
                "personalizations": [{"to": [{"email": "user@example.org"}]}],
                "from": {"email": "hello@example.com", "name": "Hello"},
                "subject": "Reminder",
                "content": [{"type": "text/plain", "value": "See you tomorrow."}],
                "send_at": 1800000000,
            },
        }
    },
}
_SG_ERROR = {"description": "SendGrid's error shape: {errors: [{message, field, help}]}"}
_MAIL_SEND_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "Sandbox mode: valid, not sent"},
    400: _SG_ERROR,
    401: _SG_ERROR,
    403: _SG_ERROR,
    413: _SG_ERROR,
    503: _SG_ERROR,
}
