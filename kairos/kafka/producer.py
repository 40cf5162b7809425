"""A durable producer that rides out a broker outage of any length.

aiokafka's idempotent producer does not survive a long outage: a batch that expires
(``KafkaTimeoutError``) leaves its partition's sequence numbers behind, the next batch is
answered ``OutOfOrderSequenceNumber``, the producer's sender task dies, and every later send
waits for a timeout forever after. :class:`DurableProducer` notices any failed send, retires
that client and builds a fresh one (a new producer id, sequence numbers from zero) as soon as
the broker answers again, and says whether it can write (``healthy``) so ``/healthz`` can tell.

Two ways to publish:

* :meth:`DurableProducer.publish` tries once, within a deadline, and raises
  :class:`PublishFailed`: for a client waiting on an answer (ingest), which must hear "no".
* :meth:`DurableProducer.publish_until_done` retries what failed, with backoff, until every
  record is acknowledged or ``stop`` is set: for consumers (timer, validator, sender), which
  must not move past a record whose effects are not durable. A retry can write a record twice
  (at least once); every record Kairos writes is keyed and carries ids that make it idempotent
  downstream.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, MessageSizeTooLargeError
from aiokafka.structs import RecordMetadata

from kairos.kafka.clients import make_producer
from kairos.logging import get_logger
from kairos.metrics import count

log = get_logger("kairos.kafka.producer")

#: errors a retry cannot fix: the record itself is refused
PERMANENT = (MessageSizeTooLargeError,)


class PublishFailed(KafkaError):  # type: ignore[misc]
    """Some record was not acknowledged in time; it may still be written later."""


@dataclass(frozen=True)
class Record:
    """One record to publish."""

    topic: str
    value: bytes
    key: bytes | None = None
    partition: int | None = None


class DurableProducer:
    """An ``AIOKafkaProducer`` (acks=all, idempotent) rebuilt after it fails.

    ``name`` labels logs and metrics; ``factory`` makes a new, unstarted client (default: the
    project's durable producer for ``bootstrap``).
    """

    def __init__(
        self,
        bootstrap: str,
        name: str,
        factory: Callable[[], AIOKafkaProducer] | None = None,
        backoff: tuple[float, float] = (0.2, 5.0),
        **overrides: Any,
    ) -> None:
        self.name = name
        self._factory = factory or (lambda: make_producer(bootstrap, **overrides))
        self._client: AIOKafkaProducer | None = None
        self._generation = 0
        self._failed_at: float | None = None
        self._rebuild: asyncio.Task[None] | None = None
        self._retired: set[asyncio.Task[None]] = set()
        self._backoff = backoff
        self._closed = False
        self.rebuilds = 0

    # -- life cycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the first client; retries until the broker answers."""
        await self._start_new()

    async def stop(self) -> None:
        """Flush and stop the current client (and whatever retired clients are still
        finishing)."""
        self._closed = True
        if self._rebuild is not None:
            self._rebuild.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._rebuild
        if self._client is not None:
            client, self._client = self._client, None
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.stop(), 10)
        for task in list(self._retired):
            task.cancel()

    @property
    def healthy(self) -> bool:
        """True while the current client works: started and no send failed since."""
        return self._client is not None and self._failed_at is None and not self._closed

    @property
    def client(self) -> AIOKafkaProducer:
        """The current client (for reads such as ``partitions_for``)."""
        if self._client is None:
            raise PublishFailed(f"{self.name}: no producer (broker unreachable)")
        return self._client

    async def _start_new(self) -> None:
        delay = self._backoff[0]
        while not self._closed:
            client = self._factory()
            try:
                await client.start()
            except (KafkaError, OSError) as exc:
                with contextlib.suppress(Exception):
                    await client.stop()
                log.warning("producer cannot start, retrying", producer=self.name, error=repr(exc))
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._backoff[1])
                continue
            self._client = client
            self._generation += 1
            self._failed_at = None
            if self._generation > 1:
                self.rebuilds += 1
                count(self.name, "producer_rebuilt")
                log.info("producer rebuilt", producer=self.name, generation=self._generation)
            return

    def _failed(self, generation: int, exc: BaseException) -> None:
        """A send of client ``generation`` failed: retire that client and build a new one
        (once per generation, however many sends saw it fail)."""
        if generation != self._generation or self._closed:
            return
        if self._failed_at is None:
            self._failed_at = time.monotonic()
            log.warning("producer failed, rebuilding", producer=self.name, error=repr(exc)[:200])
        if self._rebuild is not None and not self._rebuild.done():
            return
        old, self._client = self._client, None
        if old is not None:
            retire = asyncio.create_task(_retire(old))
            self._retired.add(retire)
            retire.add_done_callback(self._retired.discard)
        self._rebuild = asyncio.create_task(self._start_new())

    async def _current(self, deadline: float | None) -> tuple[AIOKafkaProducer, int]:
        """The working client, waiting for a rebuild until ``deadline`` (monotonic)."""
        while self._client is None:
            if self._closed:
                raise PublishFailed(f"{self.name}: producer stopped")
            if self._rebuild is None or self._rebuild.done():
                self._rebuild = asyncio.create_task(self._start_new())
            timeout = None if deadline is None else deadline - time.monotonic()
            if timeout is not None and timeout <= 0:
                raise PublishFailed(f"{self.name}: broker unavailable")
            await asyncio.wait({self._rebuild}, timeout=timeout)
        return self._client, self._generation

    # -- publishing ------------------------------------------------------------------------

    def _watch(self, generation: int, fut: asyncio.Future[Any]) -> None:
        def done(f: asyncio.Future[Any]) -> None:
            if f.cancelled():
                return
            exc = f.exception()
            if exc is not None and not isinstance(exc, PERMANENT):
                self._failed(generation, exc)

        fut.add_done_callback(done)

    async def send(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None = None,
        partition: int | None = None,
    ) -> asyncio.Future[RecordMetadata]:
        """``AIOKafkaProducer.send`` on the current client: the future of the record's
        acknowledgement. Raises :class:`PublishFailed` at once while the client is being
        rebuilt (the broker did not answer a moment ago)."""
        client = self._client
        if client is None:
            raise PublishFailed(f"{self.name}: broker unavailable")
        generation = self._generation
        try:
            fut = await client.send(topic, value, key=key, partition=partition)
        except KafkaError as exc:
            if not isinstance(exc, PERMANENT):
                self._failed(generation, exc)
            raise
        self._watch(generation, fut)
        return cast("asyncio.Future[RecordMetadata]", fut)

    async def send_and_wait(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None = None,
        partition: int | None = None,
    ) -> RecordMetadata:
        """One record, and its acknowledgement."""
        return await (await self.send(topic, value, key=key, partition=partition))

    async def partitions_for(self, topic: str) -> set[int]:
        """The partitions of ``topic``."""
        client, _ = await self._current(None)
        return set(await client.partitions_for(topic))

    async def publish(self, records: Sequence[Record], within: float) -> None:
        """Publish ``records`` and wait for every acknowledgement, within ``within`` seconds
        in all; :class:`PublishFailed` otherwise (and then some may still be written later)."""

        async def all_of() -> None:
            futures = [await self.send(r.topic, r.value, r.key, r.partition) for r in records]
            await asyncio.gather(*futures)

        task = asyncio.ensure_future(all_of())
        try:
            await asyncio.wait_for(asyncio.shield(task), within)
        except TimeoutError as exc:
            task.add_done_callback(_consume)
            # an outage: a client that cannot write in time is replaced, so what it still
            # holds is not written much later than this answer
            self._failed(self._generation, exc)
            raise PublishFailed(f"{self.name}: not acknowledged in {within:g}s") from exc
        except KafkaError as exc:
            raise PublishFailed(f"{self.name}: {exc!r}") from exc

    async def publish_until_done(
        self, records: Sequence[Record], stop: asyncio.Event | None = None
    ) -> None:
        """Publish ``records``, retrying the ones that fail (on a rebuilt client) until every
        one is acknowledged. Raises :class:`PublishFailed` only when ``stop`` is set first,
        or for a record the broker refuses for good (too large)."""
        pending = list(records)
        delay = self._backoff[0]
        while pending:
            failed: list[Record] = []
            client, generation = await self._current(None)
            futures: list[tuple[Record, asyncio.Future[Any]]] = []
            for r in pending:
                try:
                    fut = await client.send(r.topic, r.value, key=r.key, partition=r.partition)
                except PERMANENT as exc:
                    raise PublishFailed(f"{self.name}: {exc!r}") from exc
                except (KafkaError, OSError) as exc:
                    self._failed(generation, exc)
                    failed.append(r)
                    continue
                self._watch(generation, fut)
                futures.append((r, fut))
            results = await asyncio.gather(*(f for _, f in futures), return_exceptions=True)
            for (r, _), res in zip(futures, results, strict=True):
                if isinstance(res, PERMANENT):
                    raise PublishFailed(f"{self.name}: {res!r}")
                if isinstance(res, BaseException):
                    failed.append(r)
            if not failed:
                return
            pending = failed
            count(self.name, "publish_retried")
            log.warning("publish failed, retrying", producer=self.name, records=len(pending))
            if stop is not None and stop.is_set():
                raise PublishFailed(f"{self.name}: stopped with {len(pending)} unpublished")
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._backoff[1])


async def _retire(client: AIOKafkaProducer) -> None:
    """Stop a failed client without waiting on it for long: what it still holds either goes
    out or expires."""
    with contextlib.suppress(Exception, asyncio.CancelledError):
        await asyncio.wait_for(client.stop(), 5)
    with contextlib.suppress(Exception):
        await client.client.close()


def _consume(fut: asyncio.Future[Any]) -> None:
    """Retrieve a late result so asyncio does not log it as never retrieved."""
    if not fut.cancelled():
        fut.exception()
