"""In-memory stand-ins for the ingest HTTP application's collaborators: the reference view,
the publisher, the reference writer, the lifecycle projection, and a producer that loops an
idempotency log's records straight back into it (no broker)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Literal

from fastapi import FastAPI

from kairos.clock import FakeClock, to_datetime
from schemas.events import MessageEvent, Scheduled
from schemas.reference import AccountState, BatchState, DomainState, Plan, SuppressionState
from services.ingest.http import create_app
from services.ingest.idempotency import IdempotencyLog, Record
from services.ingest.lifecycle import LifecycleStore
from services.ingest.mailgun import mailgun_router
from services.ingest.manage import ScheduledMail, manage_router
from services.ingest.publish import PublishError
from services.ingest.resend import resend_router
from services.ingest.sendgrid import sendgrid_router
from services.ingest.submit import Submitter
from services.ingest.unsubscribe import unsubscribe_router
from services.reference.commands import Record as RefRecord

API_KEY = "kai_unit-test"
UNSUBSCRIBE_KEY = b"uns_unit-test"
ACCOUNT = "acc_unit"
EPOCH = datetime.fromisoformat("2020-01-01T00:00:00+00:00")


class View:
    """Reference data: one active account on plan pro, its verified domain example.com, its
    unverified domain unverified.test; ``suppressed`` maps addresses to reasons."""

    caught_up = True

    def __init__(self) -> None:
        self.batches: dict[str, BatchState] = {}
        self.suppressed: dict[str, Any] = {}
        self.account_state = AccountState(
            occurred_at=EPOCH,
            account_id=ACCOUNT,
            name="unit",
            status="active",
            plan=Plan(
                name="pro",
                max_recipients=50,
                max_message_bytes=10_000_000,
                max_horizon_seconds=30 * 86400,
                scheduling_allowed=True,
            ),
            created_at=EPOCH,
        )

    def authenticate(self, api_key: str) -> AccountState | None:
        return self.account_state if api_key == API_KEY else None

    def account(self, account_id: str) -> AccountState | None:
        return self.account_state if account_id == ACCOUNT else None

    def domain(self, account_id: str, domain: str) -> DomainState | None:
        if account_id != ACCOUNT or domain not in ("example.com", "unverified.test"):
            return None
        return DomainState(
            occurred_at=EPOCH,
            account_id=account_id,
            domain=domain,
            verified=domain == "example.com",
            changed_at=EPOCH,
        )

    def suppression(self, account_id: str, address: str) -> SuppressionState | None:
        reason = self.suppressed.get(address)
        if account_id != ACCOUNT or reason is None:
            return None
        return SuppressionState(
            occurred_at=EPOCH, account_id=account_id, address=address, reason=reason,
            added_at=EPOCH,
        )  # fmt: skip

    def batch(self, account_id: str, batch_id: str) -> BatchState | None:
        b = self.batches.get(batch_id)
        return b if b is not None and b.account_id == account_id else None


class Publisher:
    """Keeps what it is given; ``down`` makes every publish fail as the broker would."""

    def __init__(self) -> None:
        self.events: list[MessageEvent] = []
        self.down = False

    async def publish(self, event: Scheduled) -> None:
        await self.publish_many([event])

    async def publish_many(self, events: list[Any]) -> None:
        if self.down:
            raise PublishError("KafkaConnectionError")
        self.events.extend(events)

    async def command(self, event: MessageEvent) -> None:
        await self.publish_many([event])

    def ready(self) -> bool:
        return True


class Writer:
    """The reference writer: applies records to the view at once (or fails when ``down``)."""

    def __init__(self, view: View) -> None:
        self.view, self.down = view, False
        self.applied: list[RefRecord] = []

    async def apply(self, records: list[RefRecord]) -> None:
        if self.down:
            raise PublishError("KafkaConnectionError")
        for r in records:
            if r.topic == "batches":
                assert isinstance(r.value, BatchState)
                self.view.batches[r.key] = r.value
            elif r.topic == "suppressions":
                assert isinstance(r.value, SuppressionState)
                self.view.suppressed[r.value.address] = r.value.reason
            self.applied.append(r)


class Projection:
    """The lifecycle projection over an in-memory store, never catching up on anything."""

    caught_up = True

    def __init__(self, path: Path | str = ":memory:") -> None:
        self.store = LifecycleStore(path)

    async def sync(self, limit: float = 2.0) -> bool:
        return False

    async def wait_until(self, predicate: Any, timeout: float) -> bool:
        return bool(predicate())


class LoopbackProducer:
    """A producer for an :class:`IdempotencyLog` whose records are in the log as soon as
    written (what following the topic would show). ``error``: raised by every write;
    ``hang``: writes never finish."""

    def __init__(self) -> None:
        self.log: IdempotencyLog | None = None
        self.error: Exception | None = None
        self.hang = False

    async def send_and_wait(self, topic: str, value: bytes, key: bytes) -> Any:
        if self.error is not None:
            raise self.error
        if self.hang:
            import asyncio

            await asyncio.Event().wait()
        assert self.log is not None
        record = Record.decode(value)
        assert record is not None
        self.log.add(record)
        offset = self.log._positions.get(0, 0)
        self.log._positions[0] = offset + 1
        return SimpleNamespace(partition=0, offset=offset)


def idempotency_log(clock: FakeClock, in_flight: float = 60.0) -> IdempotencyLog:
    producer = LoopbackProducer()
    log = IdempotencyLog(
        producer,  # type: ignore[arg-type]
        "unused:9092",
        "idempotency",
        clock,
        in_flight_timeout=in_flight,
        timeout=0.5,
    )
    producer.log = log
    return log


class Ingest(SimpleNamespace):
    app: FastAPI
    submitter: Submitter
    clock: FakeClock
    view: View
    publisher: Publisher
    writer: Writer
    idempotency: IdempotencyLog
    broadcasts: list[tuple[str, str, str]]
    projection: Projection

    def scheduled(self) -> list[Scheduled]:
        """The messages published so far."""
        return [e for e in self.publisher.events if isinstance(e, Scheduled)]


def ingest(clock: FakeClock | None = None, scanning: Any = None, **sendgrid: Any) -> Ingest:
    """The whole ingest HTTP application on fakes."""
    clock = clock or FakeClock()
    view, publisher = View(), Publisher()
    writer = Writer(view)
    idem = idempotency_log(clock)
    broadcasts: list[tuple[str, str, str]] = []

    async def broadcast(
        account_id: str, batch_id: str, action: Literal["cancel", "pause", "resume"]
    ) -> None:
        if writer.down:
            raise PublishError("KafkaConnectionError")
        broadcasts.append((account_id, batch_id, action))

    submitter = Submitter(view, publisher, clock, idem, scanning)
    projection = Projection()
    routers = [
        manage_router(view, projection, publisher, clock),  # type: ignore[arg-type]
        resend_router(
            view,
            submitter,
            ScheduledMail(projection, publisher, clock),  # type: ignore[arg-type]
            clock,
        ),
        mailgun_router(view, submitter),
        sendgrid_router(view, writer, broadcast, submitter, clock, **sendgrid),
        unsubscribe_router(view, writer, UNSUBSCRIBE_KEY, clock),
    ]
    app = create_app(submitter, view, publisher.ready, None, routers)
    return Ingest(
        app=app,
        submitter=submitter,
        clock=clock,
        view=view,
        publisher=publisher,
        writer=writer,
        idempotency=idem,
        broadcasts=broadcasts,
        projection=projection,
    )


def batch(batch_id: str, created: float) -> BatchState:
    at = to_datetime(created)
    return BatchState(occurred_at=at, account_id=ACCOUNT, batch_id=batch_id, created_at=at)
