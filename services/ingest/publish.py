"""Publishing accepted submissions into the schedule stream, durably, and never a yes that was
not durable."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, Protocol

from kairos.clock import Clock, to_datetime
from kairos.kafka.producer import DurableProducer, PublishFailed, Record
from schemas.codec import encode
from schemas.events import CancelRequested, MessageEvent, Scheduled


class Publisher(Protocol):
    """Where accepted events go. ``publish`` returns only once the broker has acknowledged
    the event (acks=all) and raises :class:`PublishError` otherwise."""

    async def publish(self, event: Scheduled) -> None: ...

    def ready(self) -> bool: ...


class PublishError(RuntimeError):
    """The event could not be made durable; the client must not hear yes."""


#: how long a client waits past an event's ``accept_by`` for its acknowledgement: the broker
#: appended it in time but its answer is still on the way
ACK_GRACE = 2.0


class KafkaPublisher:
    """Publishes submissions into the schedule stream with the durable producer (acks=all,
    idempotent, rebuilt after an outage), and makes sure a refusal is a no.

    A timeout is not a no: a record the client was refused for may still be written once the
    broker is back. Two things make sure such a late write is never delivered:

    * every ``scheduled`` event carries ``accept_by`` (now + ``timeout``), and the schedule
      stream stamps records with the broker's append time: the timer drops, as ``withdrawn``,
      a scheduled event appended after its ``accept_by``. The client waits ``ACK_GRACE``
      longer than that for the acknowledgement, so a refusal means the record was not
      appended in time (or its acknowledgement took more than ``ACK_GRACE`` to arrive);
    * a cancel is queued behind each refused ``scheduled`` event (same partition, the same
      or a later producer), for the rare write that was appended in time yet acknowledged
      too late.
    """

    def __init__(
        self, producer: DurableProducer, topic: str, clock: Clock, timeout: float = 10.0
    ) -> None:
        self.producer, self.topic, self.clock, self.timeout = producer, topic, clock, timeout
        self.started = False
        self._withdrawals: set[asyncio.Task[Any]] = set()

    async def publish(self, event: Scheduled) -> None:
        await self.publish_many([event])

    async def publish_many(self, events: Sequence[MessageEvent]) -> None:
        """Publish several events (each keyed by its message id) and wait for every
        acknowledgement; :class:`PublishError` if any is not durable in time."""
        accept_by = to_datetime(self.clock.now() + self.timeout)
        stamped = [
            e.model_copy(update={"accept_by": accept_by})
            if isinstance(e, Scheduled) and e.accept_by is None
            else e
            for e in events
        ]
        records = [Record(self.topic, encode(e), e.message_id.encode()) for e in stamped]
        try:
            await self.producer.publish(records, self.timeout + ACK_GRACE)
        except PublishFailed as exc:
            self._withdraw([e for e in stamped if isinstance(e, Scheduled)])
            raise PublishError(str(exc) or type(exc).__name__) from exc

    def _withdraw(self, events: Sequence[Scheduled]) -> None:
        async def withdraw() -> None:
            cancels = [
                Record(
                    self.topic,
                    encode(
                        CancelRequested(
                            occurred_at=e.occurred_at,
                            account_id=e.account_id,
                            message_id=e.message_id,
                        )
                    ),
                    e.message_id.encode(),
                )
                for e in events
            ]
            await self.producer.publish_until_done(cancels)

        if events:
            task = asyncio.create_task(withdraw())
            self._withdrawals.add(task)
            task.add_done_callback(self._withdrawals.discard)

    async def command(self, event: MessageEvent) -> None:
        """Publish a lifecycle command into the schedule stream, durably."""
        await self.publish_many([event])

    def ready(self) -> bool:
        """Started, and the producer can write (false during a broker outage)."""
        return self.started and self.producer.healthy
