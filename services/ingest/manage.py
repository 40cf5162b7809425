"""Managing scheduled mail by id (JetEmail-style paths, Bearer API key): status and timeline,
listing, cancel, pause, resume and reschedule.

Reads come from the lifecycle projection; changes are lifecycle commands on the schedule
stream, which the timer applies in order with everything else about the message. Every lookup
is scoped to the key's account: another account's message is "not found", never a hint that
the id exists.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Protocol

from fastapi import APIRouter, Header, Query
from fastapi.responses import JSONResponse

from kairos.clock import Clock, to_datetime
from kairos.metrics import REJECTED
from schemas.events import (
    CancelRequested,
    MessageEvent,
    PauseRequested,
    RescheduleRequested,
    ResumeRequested,
)
from schemas.reference import AccountState
from services.ingest.checks import check_account, horizon_of
from services.ingest.compose import SubmitError, error_body
from services.ingest.lifecycle import PENDING, STATUSES, LifecycleProjection, decode_cursor
from services.ingest.lifecycle import encode_cursor as _cursor
from services.ingest.schedule import MAX_HORIZON_SECONDS, ScheduleError, parse_time
from services.ingest.schedule import resolve_scheduled_at as _resolve

#: How long a command waits for the timer's answer before replying 202 ("requested").
COMMAND_WAIT_SECONDS = 5.0
#: Due seconds are SQLite integers (64 bits signed).
_INT64 = range(-(2**63), 2**63)


class CommandPublisher(Protocol):
    """Publishes a lifecycle command durably (acks=all); raises when it cannot."""

    async def command(self, event: MessageEvent) -> None: ...


class Accounts(Protocol):
    def authenticate(self, api_key: str) -> AccountState | None: ...


def authenticate(view: Accounts, authorization: str | None) -> AccountState:
    """The account of a ``Bearer`` API key; SubmitError 401/403 otherwise."""
    key = (authorization or "").removeprefix("Bearer ").strip()
    return check_account(view.authenticate(key) if key else None)


def _error(exc: SubmitError) -> JSONResponse:
    REJECTED.labels("manage", exc.code).inc()
    return JSONResponse(error_body(exc.code, exc.message, exc.field), status_code=exc.status)


def _not_found(message_id: str) -> SubmitError:
    return SubmitError("NOT_FOUND", f"no message {message_id}", None, 404)


def _not_pending(message_id: str, status: str, verb: str) -> SubmitError:
    return SubmitError(
        "MESSAGE_NOT_PENDING",
        f"message {message_id} is {status}; only a scheduled, paused or deferred message "
        f"can be {verb}",
        None,
        409,
    )


class ScheduledMail:
    """The management use cases over the lifecycle projection and the command stream, for
    every front door that manages messages by id (``/email``, Resend's ``/emails``): find a
    message of an account, change it by a lifecycle command, reschedule it. Each raises
    SubmitError with a stable code (``NOT_FOUND``, ``MESSAGE_NOT_PENDING``, ...)."""

    def __init__(
        self, projection: LifecycleProjection, publisher: CommandPublisher, clock: Clock
    ) -> None:
        self.projection, self.publisher, self.clock = projection, publisher, clock
        self.store = projection.store

    async def find(self, account: AccountState, message_id: str) -> dict[str, Any]:
        """The message (summary and timeline); 404 ``NOT_FOUND``, 503 while catching up."""
        store, projection = self.store, self.projection
        found = store.get(account.account_id, message_id)
        if found is None and await projection.sync():
            found = store.get(account.account_id, message_id)
        if found is None and not projection.caught_up:
            raise SubmitError(
                "CATCHING_UP", "message status is being rebuilt from the log; retry", None, 503
            )
        if found is None:
            raise _not_found(message_id)
        return found

    async def pending(self, account: AccountState, message_id: str, verb: str) -> dict[str, Any]:
        found = await self.find(account, message_id)
        if found["status"] not in PENDING:
            raise _not_pending(message_id, found["status"], verb)
        return found

    @staticmethod
    def rejections(found: dict[str, Any] | None, command: str) -> int:
        timeline = found["timeline"] if found is not None else []
        return sum(1 for e in timeline if e["type"] == "rejected" and e.get("command") == command)

    async def run(
        self, account: AccountState, found: dict[str, Any], event: MessageEvent, verb: str
    ) -> str:
        """Publish ``event`` and wait (bounded) until the projection shows its effect:
        the status it led to, or ``rejected``; "requested" if the wait ran out."""
        store, rejections = self.store, self.rejections
        command = str(event.type)
        before = rejections(store.get(account.account_id, found["id"]), command)
        try:
            await self.publisher.command(event)
        except Exception as exc:
            raise SubmitError(
                "BROKER_UNAVAILABLE", "could not store the command; retry", None, 503
            ) from exc

        def settled(_: object = None) -> bool:
            now = store.get(account.account_id, found["id"])
            if now is None:
                return False
            if rejections(now, command) > before:
                return True
            if command == "cancel":
                return bool(now["status"] == "cancelled")
            return any(e["type"] == command for e in now["timeline"][len(found["timeline"]) :])

        if not await self.projection.wait_until(settled, COMMAND_WAIT_SECONDS):
            return "requested"
        after = store.get(account.account_id, found["id"])
        assert after is not None
        if rejections(after, command) > before:
            raise _not_pending(found["id"], after["status"], verb)
        return str(after["status"])

    def envelope(self, account: AccountState, message_id: str) -> dict[str, Any]:
        return {
            "occurred_at": to_datetime(self.clock.now()),
            "account_id": account.account_id,
            "message_id": message_id,
        }

    async def change(
        self, account: AccountState, message_id: str, verb: str, kind: type[MessageEvent]
    ) -> str:
        """Cancel, pause or resume a pending message (``kind``): the status it led to, or
        "requested" when the timer has not answered within a few seconds."""
        found = await self.pending(account, message_id, verb)
        return await self.run(account, found, kind(**self.envelope(account, message_id)), verb)

    async def reschedule(self, account: AccountState, message_id: str, due: int) -> str:
        """Move a pending message to ``due`` (already checked against the clock and the
        horizon): the status it led to, or "requested"."""
        found = await self.pending(account, message_id, "rescheduled")
        check_kept(found.get("submitted_at"), due)
        event = RescheduleRequested(**self.envelope(account, message_id), due_at=due)
        return await self.run(account, found, event, "rescheduled")


def check_kept(submitted_at: str | None, due: int) -> None:
    """A message's text stays in the schedule stream for a while past the horizon after its
    submission (the claim check, docs/operations.md): a reschedule may not move it later
    than the horizon counted from its submission (``SCHEDULED_AT_TOO_FAR``)."""
    if not submitted_at:
        return
    limit = datetime.fromisoformat(submitted_at).timestamp() + MAX_HORIZON_SECONDS
    if due > limit:
        raise SubmitError(
            "SCHEDULED_AT_TOO_FAR",
            f"{due} is more than {MAX_HORIZON_SECONDS // 86400} days after the message was "
            f"submitted (latest {int(limit)})",
            "scheduledAt",
        )


def manage_router(
    view: Accounts, projection: LifecycleProjection, publisher: CommandPublisher, clock: Clock
) -> APIRouter:
    """The management endpoints, under ``/email``."""
    router = APIRouter(tags=["manage"])
    store = projection.store
    mail = ScheduledMail(projection, publisher, clock)
    find = mail.find

    @router.get("/email/{message_id}")
    async def get_email(
        message_id: str, authorization: str | None = Header(default=None)
    ) -> JSONResponse:
        """A message's status (scheduled, paused, deferred, due, delivered, failed,
        cancelled), its due second and its timeline of events."""
        try:
            account = authenticate(view, authorization)
            return JSONResponse({"object": "email", **await find(account, message_id)})
        except SubmitError as exc:
            return _error(exc)

    @router.get("/email")
    async def list_emails(
        authorization: str | None = Header(default=None),
        status: str = Query(
            default="pending", description="Comma-separated; pending = scheduled,paused,deferred"
        ),
        batch_id: str | None = None,
        due_from: str | None = Query(default=None, description="Unix seconds or RFC 3339"),
        due_to: str | None = Query(default=None, description="Unix seconds or RFC 3339"),
        limit: int = Query(default=50, ge=1, le=1000),
        cursor: str | None = None,
    ) -> JSONResponse:
        """Messages of the account ordered by due second, ``limit`` at a time; pass
        ``next_cursor`` back as ``cursor`` for the next page."""
        try:
            account = authenticate(view, authorization)
            wanted: list[str] = []
            for s in status.split(","):
                s = s.strip()
                if s == "pending":
                    wanted += PENDING
                elif s in STATUSES:
                    wanted.append(s)
                else:
                    raise SubmitError(
                        "INVALID_QUERY", f"unknown status {s!r}; one of {STATUSES}", "status"
                    )
            bounds = [parse_bound(due_from, "due_from"), parse_bound(due_to, "due_to")]
            try:
                after = decode_cursor(cursor) if cursor else None
            except ValueError as exc:
                raise SubmitError("INVALID_QUERY", str(exc), "cursor") from exc
            if after is not None and after[0] not in _INT64:
                raise SubmitError("INVALID_QUERY", "not a cursor of this API", "cursor")
            rows = store.list(
                account.account_id, wanted, batch_id, bounds[0], bounds[1], limit + 1, after
            )
        except SubmitError as exc:
            return _error(exc)
        more = len(rows) > limit
        rows = rows[:limit]
        last = rows[-1] if more else None
        return JSONResponse(
            {
                "object": "list",
                "data": rows,
                "has_more": more,
                "next_cursor": _cursor(last["scheduled_at"] or 0, last["id"]) if last else None,
            }
        )

    @router.post("/email/{message_id}/cancel")
    async def cancel_email(
        message_id: str, authorization: str | None = Header(default=None)
    ) -> JSONResponse:
        """Cancel a pending message: 200 once the timer has cancelled it (a ``cancelled``
        outcome is recorded), 202 if it has not answered within a few seconds, 409
        ``MESSAGE_NOT_PENDING`` once it is due or settled."""
        return await _change(message_id, authorization, "cancelled", CancelRequested)

    @router.post("/email/{message_id}/pause")
    async def pause_email(
        message_id: str, authorization: str | None = Header(default=None)
    ) -> JSONResponse:
        """Hold a pending message until it is resumed (discarded 72 h past its due time)."""
        return await _change(message_id, authorization, "paused", PauseRequested)

    @router.post("/email/{message_id}/resume")
    async def resume_email(
        message_id: str, authorization: str | None = Header(default=None)
    ) -> JSONResponse:
        """Release a paused message (due at once if its second has passed)."""
        return await _change(message_id, authorization, "resumed", ResumeRequested)

    async def _change(
        message_id: str, authorization: str | None, verb: str, kind: type[MessageEvent]
    ) -> JSONResponse:
        try:
            account = authenticate(view, authorization)
            status = await mail.change(account, message_id, verb, kind)
        except SubmitError as exc:
            return _error(exc)
        code = 202 if status == "requested" else 200
        return JSONResponse({"object": "email", "id": message_id, "status": status}, code)

    @router.patch("/email/{message_id}")
    async def reschedule_email(
        message_id: str, body: dict[str, Any], authorization: str | None = Header(default=None)
    ) -> JSONResponse:
        """Move a pending message to ``scheduledAt`` (or ``scheduled_at``), under the same
        rules as a submission. The body may repeat ``id``."""
        try:
            account = authenticate(view, authorization)
            if body.get("id") not in (None, message_id):
                raise SubmitError("INVALID_REQUEST", "id does not match the path", "id")
            unknown = set(body) - {"id", "scheduledAt", "scheduled_at"}
            if unknown:
                raise SubmitError(
                    "INVALID_REQUEST",
                    f"only scheduledAt can change; got {sorted(unknown)}",
                    sorted(unknown)[0],
                )
            now = clock.now()
            try:
                due = _resolve(body, now, horizon_of(account, True, MAX_HORIZON_SECONDS))
            except ScheduleError as exc:
                raise SubmitError(exc.code, exc.message, exc.field) from exc
            if due is None:
                raise SubmitError("SCHEDULED_AT_REQUIRED", "scheduledAt is required", "scheduledAt")
            status = await mail.reschedule(account, message_id, due)
        except SubmitError as exc:
            return _error(exc)
        return JSONResponse(
            {"object": "email", "id": message_id, "status": status, "scheduled_at": due},
            202 if status == "requested" else 200,
        )

    return router


def parse_bound(value: str | None, name: str) -> int | None:
    """A ``due_from``/``due_to`` query value (unix seconds, ASCII digits, at most 12 of them,
    or RFC 3339 with an offset); SubmitError ``INVALID_QUERY`` otherwise."""
    if value is None:
        return None
    try:
        return parse_time(value, name)
    except ScheduleError as exc:
        raise SubmitError("INVALID_QUERY", exc.message, name) from exc
