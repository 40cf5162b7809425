"""The ingest service: the HTTP API on ``http_host:http_port``."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator
from typing import Literal

import uvicorn
from prometheus_client import REGISTRY

from kairos.clock import Clock
from kairos.commands import broadcast_batch_command
from kairos.kafka.producer import DurableProducer, TransactionalProducer
from kairos.logging import get_logger
from kairos.settings import KairosSettings
from kairos.token import admin_token
from kairos.unsubscribe import unsubscribe_key
from schemas.registry import IDEMPOTENCY, OUTCOMES, SCHEDULE
from services.ingest.http import create_app
from services.ingest.idempotency import IdempotencyLog
from services.ingest.lifecycle import LifecycleProjection
from services.ingest.mailgun import mailgun_router
from services.ingest.manage import ScheduledMail, manage_router
from services.ingest.publish import KafkaPublisher
from services.ingest.resend import resend_router
from services.ingest.scanners import scanning_from
from services.ingest.sendgrid import sendgrid_router
from services.ingest.smtp import SubmissionHandler, server_factory
from services.ingest.submit import Submitter
from services.ingest.unsubscribe import unsubscribe_router
from services.reference.admin import admin_router
from services.reference.view import ReferenceView
from services.reference.writer import ReferenceWriter

log = get_logger("kairos.ingest")


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the service's stop event decides."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def run(settings: KairosSettings, bootstrap: str, clock: Clock, stop: asyncio.Event) -> None:
    """Serve until ``stop`` is set."""
    # a client waits for the acknowledgement: batch only what arrives within a millisecond
    producer = DurableProducer(bootstrap, "ingest", linger_ms=1)
    instance = settings.ingest_instance_id or f"{socket.gethostname()}-{settings.http_port}"
    transactions = TransactionalProducer(
        bootstrap, f"{settings.group('ingest')}-{instance}", "ingest-transactions", linger_ms=1
    )
    publisher = KafkaPublisher(
        transactions, producer, settings.topic(SCHEDULE), clock, outcomes=settings.topic(OUTCOMES)
    )
    view = ReferenceView(settings, bootstrap)
    token = admin_token(settings)
    assert token is not None
    admin = admin_router(view, ReferenceWriter(producer, settings, view), token, clock)
    idempotency = IdempotencyLog(
        producer,
        bootstrap,
        settings.topic(IDEMPOTENCY),
        clock,
        in_flight_timeout=settings.idempotency_in_flight_timeout,
    )
    projection = LifecycleProjection(
        settings,
        bootstrap,
        settings.lifecycle_db or settings.state_dir / f"lifecycle-{settings.http_port}.sqlite3",
        clock,
    )
    REGISTRY.register(projection)  # kairos_pending_messages, read at each scrape
    writer = ReferenceWriter(producer, settings, view)

    async def broadcast(
        account_id: str, batch_id: str, action: Literal["cancel", "pause", "resume"]
    ) -> None:
        await broadcast_batch_command(producer, settings, account_id, batch_id, action, clock.now())

    submitter = Submitter(view, publisher, clock, idempotency, scanning_from(settings))
    routers = [
        manage_router(view, projection, publisher, clock),
        resend_router(view, submitter, ScheduledMail(projection, publisher, clock), clock),
        mailgun_router(view, submitter),
        sendgrid_router(
            view, writer, broadcast, submitter, clock, open_batch_limit=settings.open_batch_limit
        ),
        unsubscribe_router(view, writer, unsubscribe_key(settings), clock),
    ]
    app = create_app(submitter, view, publisher.ready, admin, routers)
    config = uvicorn.Config(
        app,
        host=settings.http_host,
        port=settings.http_port,
        log_level="warning",
        access_log=False,
        lifespan="off",
    )
    server = _Server(config)
    await producer.start()
    await transactions.start()
    await view.start()
    await idempotency.start()
    await projection.start()
    publisher.started = True
    smtp_server = None
    if settings.smtp_port:
        handler = SubmissionHandler(view, submitter)
        smtp_server = await asyncio.get_running_loop().create_server(
            server_factory(settings, handler), settings.smtp_host, settings.smtp_port
        )
    serve = asyncio.create_task(server.serve())
    log.info("ingest started", http=f"http://{settings.http_host}:{settings.http_port}")
    try:
        await asyncio.wait(
            {serve, asyncio.create_task(stop.wait())}, return_when=asyncio.FIRST_COMPLETED
        )
    finally:
        server.should_exit = True
        await serve
        if smtp_server is not None:
            smtp_server.close()
            await smtp_server.wait_closed()
        await view.stop()
        REGISTRY.unregister(projection)
        await projection.stop()
        await idempotency.stop()
        await transactions.stop()
        await producer.stop()
