"""Publishing accepted submissions into the schedule stream, durably, and never a yes that was
not durable."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, Protocol

from schemas.codec import encode
from schemas.events import CancelRequested, MessageEvent, Scheduled


class Publisher(Protocol):
    """Where accepted events go. ``publish`` returns only once the broker has acknowledged
    the event (acks=all) and raises :class:`PublishError` otherwise."""

    async def publish(self, event: Scheduled) -> None: ...

    def ready(self) -> bool: ...


class PublishError(RuntimeError):
    """The event could not be made durable; the client must not hear yes."""


class KafkaPublisher:
    """Publishes scheduled events with a durable producer (acks=all, idempotent)."""

    def __init__(self, producer: Any, topic: str, timeout: float = 10.0) -> None:
        self.producer, self.topic, self.timeout = producer, topic, timeout
        self.started = False
        self._withdrawals: set[asyncio.Task[Any]] = set()

    async def publish(self, event: Scheduled) -> None:
        await self.publish_many([event])

    async def publish_many(self, events: Sequence[MessageEvent]) -> None:
        """Publish several events (each keyed by its message id) and wait for every
        acknowledgement; PublishError if any is not durable in time.

        A timeout is not a no: the producer may still write an event once the broker is back.
        So a submission that was refused is also withdrawn: a cancel is queued behind each
        ``scheduled`` event, on the same partition of the same idempotent producer, so a late
        write is cancelled by the timer rather than delivered (and a cancel for a message that
        never arrived is recorded as rejected)."""
        from aiokafka.errors import KafkaError

        async def send_all() -> None:
            futures = [
                await self.producer.send(self.topic, encode(e), key=e.message_id.encode())
                for e in events
            ]
            await asyncio.gather(*futures)

        try:
            await asyncio.wait_for(send_all(), self.timeout)
        except (KafkaError, TimeoutError) as exc:
            self._withdraw([e for e in events if isinstance(e, Scheduled)])
            raise PublishError(str(exc) or type(exc).__name__) from exc

    def _withdraw(self, events: Sequence[Scheduled]) -> None:
        for e in events:
            cancel = CancelRequested(
                occurred_at=e.occurred_at, account_id=e.account_id, message_id=e.message_id
            )
            task = asyncio.create_task(
                self.producer.send(self.topic, encode(cancel), key=e.message_id.encode())
            )
            self._withdrawals.add(task)
            task.add_done_callback(self._withdrawals.discard)

    async def command(self, event: MessageEvent) -> None:
        """Publish a lifecycle command into the schedule stream, durably."""
        await self.publish_many([event])

    def ready(self) -> bool:
        return self.started
