"""Publishing accepted submissions into the schedule stream, durably, and never a yes that was
not durable."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, Protocol

from kairos.clock import Clock, to_datetime
from kairos.kafka.producer import (
    DurableProducer,
    PublishFailed,
    Record,
    TransactionalProducer,
)
from schemas.codec import encode
from schemas.events import CancelRequested, Failed, MessageEvent, Scheduled


class Publisher(Protocol):
    """Where accepted events go. ``publish`` returns only once the broker has acknowledged
    the event (acks=all) and raises :class:`PublishError` otherwise."""

    async def publish(self, event: Scheduled) -> None: ...

    def ready(self) -> bool: ...


class PublishError(RuntimeError):
    """The event could not be made durable; the client must not hear yes."""


class KafkaPublisher:
    """Publishes submissions into the schedule stream, all or nothing, and makes sure a
    refusal is a no.

    * **All or nothing.** The events of one submission (every message of a multi-recipient
      or ``send_each_at`` request) are written in one Kafka transaction: the timer and every
      other reader read committed records only, so either all of them are scheduled or none
      is. Concurrent submissions share transactions (group commit).
    * **A refusal is a no.** A submission is answered yes only once its transaction
      committed; a transaction is committed only before the submission's deadline (``timeout``
      after it arrived), else aborted, and its client told to retry. Every ``scheduled`` event
      also carries ``accept_by`` (the deadline as a wall time); the schedule stream stamps the
      broker's append time, and the timer withdraws a ``scheduled`` event appended after its
      ``accept_by``. For the rare commit that was under way at the deadline and answered late,
      a cancel is queued behind each refused event (written without a transaction, retried
      until durable).
    """

    def __init__(
        self,
        transactions: TransactionalProducer,
        producer: DurableProducer,
        topic: str,
        clock: Clock,
        timeout: float = 10.0,
        outcomes: str | None = None,
    ) -> None:
        self.transactions, self.producer = transactions, producer
        self.topic, self.clock, self.timeout = topic, clock, timeout
        #: where a submission's ``failed`` outcomes go (recipients refused at submit time)
        self.outcomes = outcomes
        self.started = False
        self._withdrawals: set[asyncio.Task[Any]] = set()

    async def publish(self, event: Scheduled) -> None:
        await self.publish_many([event])

    async def publish_many(self, events: Sequence[MessageEvent]) -> None:
        """Publish the events of one submission (each keyed by its message id) in one
        transaction; :class:`PublishError` unless it committed in time."""
        accept_by = to_datetime(self.clock.now() + self.timeout)
        stamped = [
            e.model_copy(update={"accept_by": accept_by})
            if isinstance(e, Scheduled) and e.accept_by is None
            else e
            for e in events
        ]
        records = [Record(self._topic_of(e), encode(e), e.message_id.encode()) for e in stamped]
        try:
            await self.transactions.publish(records, self.timeout)
        except PublishFailed as exc:
            self._withdraw([e for e in stamped if isinstance(e, Scheduled)])
            raise PublishError(str(exc) or type(exc).__name__) from exc

    def _topic_of(self, event: MessageEvent) -> str:
        """The schedule stream; the outcomes topic for a ``failed`` outcome."""
        if isinstance(event, Failed):
            if self.outcomes is None:
                raise PublishError("no outcomes topic to record a failed outcome on")
            return self.outcomes
        return self.topic

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
        try:
            await self.producer.publish(
                [Record(self.topic, encode(event), event.message_id.encode())], self.timeout
            )
        except PublishFailed as exc:
            raise PublishError(str(exc) or type(exc).__name__) from exc

    def ready(self) -> bool:
        """Started, and both producers can write (false during a broker outage)."""
        return self.started and self.transactions.healthy and self.producer.healthy
