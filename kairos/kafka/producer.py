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
  downstream. Several records given one partition go out in record batches built here (one
  future per batch, not per record: the hot path of the timer's changelog and due events), and
  the call answers the last acknowledged offset of each partition written.
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
    #: None: a tombstone (a compacted topic forgets ``key``)
    value: bytes | None
    key: bytes | None = None
    partition: int | None = None


#: (topic, partition) -> the offset of the last record acknowledged there
Acknowledged = dict[tuple[str, int], int]

#: records for one partition from which a call builds its own record batches. Fewer go one by
#: one, into the client's open batch: a batch handed over waits until the partition's previous
#: one is drained, so callers side by side (the sender's deliveries, one outcome each) would
#: queue behind each other instead of sharing one batch.
BATCH_FROM = 4

#: records larger than this go one by one: ``send`` checks a record against the largest
#: request before it is written, where a batch handed over is checked by the broker only
ALONE_FROM = 256 * 1024


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
        start_timeout: float = 30.0,
        **overrides: Any,
    ) -> None:
        self.name = name
        self._start_timeout = start_timeout
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
                await self._bounded_start(client)
            except Exception as exc:  # whatever stops a start, the next client is tried
                self._retire_later(client)
                log.warning(
                    "producer cannot start, retrying",
                    producer=self.name,
                    error=repr(exc) or type(exc).__name__,
                )
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

    def _retire_later(self, client: AIOKafkaProducer) -> None:
        """Stop ``client`` in the background (kept until done, so ``stop`` can cancel it)."""
        retire = asyncio.create_task(_retire(client))
        self._retired.add(retire)
        retire.add_done_callback(self._retired.discard)

    async def _bounded_start(self, client: AIOKafkaProducer) -> None:
        """``client.start()``, given up after ``start_timeout``. A transactional client's start
        waits for its producer id, and after a broker freeze that wait can hang for good on a
        dead connection (seen in the fault suite: ingest never healthy again). The start is
        abandoned, not awaited through its cancellation: ``asyncio.wait_for`` waits for the
        cancelled start to finish, and a start that swallows the cancellation hangs it too."""
        task = asyncio.ensure_future(client.start())
        done, _ = await asyncio.wait({task}, timeout=self._start_timeout)
        if task in done:
            if task.cancelled():  # by the client itself: as much a failed start as any other
                raise TimeoutError("start cancelled")
            task.result()
            return
        task.cancel()
        task.add_done_callback(_consume)
        raise TimeoutError(f"no producer id in {self._start_timeout:g}s")

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
            self._retire_later(old)
        self._rebuild = None
        self.ensure_rebuilding()

    def ensure_rebuilding(self) -> None:
        """Without a client, make sure a rebuild is under way: one that ended without a
        client (an error nobody awaited) is started again, so a producer is never left
        without a client and without a rebuild."""
        if self._closed or self._client is not None:
            return
        if self._rebuild is None or self._rebuild.done():
            self._rebuild = asyncio.create_task(self._start_new())
            self._rebuild.add_done_callback(self._rebuild_ended)

    def _rebuild_ended(self, task: asyncio.Task[None]) -> None:
        """A rebuild that ended without a client (an error, a cancellation from outside) is
        started again after a pause, and on the next use: a producer nobody writes through for
        a while (ingest's commands) would otherwise stay unhealthy for good."""
        if self._closed or self._client is not None:
            return
        error = "cancelled" if task.cancelled() else repr(task.exception())[:300]
        log.warning("producer rebuild failed, restarting it", producer=self.name, error=error)
        asyncio.get_running_loop().call_later(self._backoff[1], self.ensure_rebuilding)

    async def _current(self, deadline: float | None) -> tuple[AIOKafkaProducer, int]:
        """The working client, waiting for a rebuild until ``deadline`` (monotonic)."""
        while self._client is None:
            if self._closed:
                raise PublishFailed(f"{self.name}: producer stopped")
            self.ensure_rebuilding()
            assert self._rebuild is not None
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
            self.ensure_rebuilding()
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
    ) -> Acknowledged:
        """Publish ``records``, retrying the ones that fail (on a rebuilt client) until every
        one is acknowledged. Raises :class:`PublishFailed` only when ``stop`` is set first,
        or for a record the broker refuses for good (too large). Answers the last offset
        acknowledged in each partition written (of the attempt that wrote it)."""
        pending = list(records)
        acknowledged: Acknowledged = {}
        delay = self._backoff[0]
        while pending:
            client, generation = await self._current(None)
            sent, failed = await self._send_all(client, generation, pending)
            results = await asyncio.gather(*(f for _, f in sent), return_exceptions=True)
            for (group, _), res in zip(sent, results, strict=True):
                if isinstance(res, PERMANENT):
                    raise PublishFailed(f"{self.name}: {res!r}")
                if isinstance(res, BaseException):
                    failed.extend(group)
                    continue
                if res.offset < 0:
                    continue  # acknowledged without an offset (a repeat the broker had)
                # a batch's future answers its first record's offset
                tp, last = (res.topic, res.partition), res.offset + len(group) - 1
                acknowledged[tp] = max(last, acknowledged.get(tp, last))
            if not failed:
                return acknowledged
            pending = failed
            count(self.name, "publish_retried")
            log.warning("publish failed, retrying", producer=self.name, records=len(pending))
            if stop is not None and stop.is_set():
                raise PublishFailed(f"{self.name}: stopped with {len(pending)} unpublished")
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._backoff[1])
        return acknowledged

    async def _send_all(
        self, client: AIOKafkaProducer, generation: int, records: list[Record]
    ) -> tuple[list[tuple[list[Record], asyncio.Future[Any]]], list[Record]]:
        """Hand ``records`` to ``client``: those with a partition in batches per partition,
        the others one by one. Answers each future with the records it stands for, and the
        records the client refused at once."""
        sent: list[tuple[list[Record], asyncio.Future[Any]]] = []
        failed: list[Record] = []
        by_partition: dict[tuple[str, int], list[Record]] = {}
        singles: list[Record] = []
        for r in records:
            if r.partition is None:
                singles.append(r)
            else:
                by_partition.setdefault((r.topic, r.partition), []).append(r)
        for (topic, partition), group in by_partition.items():
            batched = [r for r in group if _size(r) < ALONE_FROM]
            singles.extend(r for r in group if _size(r) >= ALONE_FROM)
            if len(batched) < BATCH_FROM:
                singles.extend(batched)
                continue
            start = 0
            while start < len(batched):
                batch = client.create_batch()
                end = start
                # a batch takes its first record whatever its size, then what fits
                while end < len(batched) and (
                    batch.append(key=batched[end].key, value=batched[end].value, timestamp=None)
                    is not None
                ):
                    end += 1
                try:
                    fut = await client.send_batch(batch, topic, partition=partition)
                except PERMANENT as exc:
                    raise PublishFailed(f"{self.name}: {exc!r}") from exc
                except (KafkaError, OSError) as exc:
                    self._failed(generation, exc)
                    failed.extend(batched[start:])
                    break
                self._watch(generation, fut)
                sent.append((batched[start:end], fut))
                start = end
        for r in singles:
            try:
                fut = await client.send(r.topic, r.value, key=r.key, partition=r.partition)
            except PERMANENT as exc:
                raise PublishFailed(f"{self.name}: {exc!r}") from exc
            except (KafkaError, OSError) as exc:
                self._failed(generation, exc)
                failed.append(r)
                continue
            self._watch(generation, fut)
            sent.append(([r], fut))
        return sent, failed


def _size(r: Record) -> int:
    return len(r.value or b"") + len(r.key or b"")


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


#: a caller waiting on a transaction: its records, its deadline (monotonic), its answer
Waiting = tuple[Sequence[Record], float, "asyncio.Future[None]"]


class TransactionalProducer:
    """All-or-nothing publishing with group commit: each :meth:`publish` call's records are
    written in one Kafka transaction (committed or aborted together), and the calls that
    arrive while a transaction is being committed share the next one, so one producer serves
    many concurrent clients. Readers must read ``read_committed``.

    A call is answered yes only when its transaction committed. A transaction is committed
    only if it can be before the earliest ``deadline`` of the calls in it (monotonic time);
    past it, it is aborted, because those callers are being told no. A failed client (fenced,
    out of sequence, a broker outage) is replaced by a fresh one with the same transactional
    id, which also aborts whatever the old one left open.

    Once the commit is sent, only the broker knows whether it took: a broker frozen just
    then answers after it thaws, and a commit it received is completed even if the client
    gives up. So its callers wait for that answer (up to ``commit_wait`` seconds), past their
    deadlines, and hear the truth: yes if it committed, no if it did not. Told no at the
    deadline instead, a message that was written after all went out (seen in the fault
    suite's broker freeze).
    """

    def __init__(
        self,
        bootstrap: str,
        transactional_id: str,
        name: str,
        transaction_timeout_ms: int = 15_000,
        max_records: int = 5_000,
        factory: Callable[[], AIOKafkaProducer] | None = None,
        commit_wait: float = 120.0,
        **overrides: Any,
    ) -> None:
        self.name = name
        self.max_records = max_records
        self.commit_wait = commit_wait
        #: the calls whose transaction's commit was sent: their outcome is the broker's answer
        self._committing: set[asyncio.Future[None]] = set()
        self._factory = factory or (
            lambda: make_producer(
                bootstrap,
                transactional_id=transactional_id,
                transaction_timeout_ms=transaction_timeout_ms,
                **overrides,
            )
        )
        self._durable = DurableProducer(bootstrap, name, factory=self._factory)
        self._queue: list[Waiting] = []
        self._wake = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self.transactions = 0

    @property
    def healthy(self) -> bool:
        return self._durable.healthy

    async def start(self) -> None:
        await self._durable.start()
        self._loop_task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
        for _, _, fut in self._queue:
            if not fut.done():
                fut.set_exception(PublishFailed(f"{self.name}: stopped"))
        self._queue.clear()
        await self._durable.stop()

    async def publish(self, records: Sequence[Record], within: float) -> None:
        """Write ``records`` in one transaction; return once it committed, or raise
        :class:`PublishFailed` (nothing of it is visible to read_committed readers, unless
        the commit was under way and its answer took longer than ``within`` + 2 s)."""
        if self._durable._client is None:
            self._durable.ensure_rebuilding()
            raise PublishFailed(f"{self.name}: broker unavailable")
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append((records, time.monotonic() + within, fut))
        self._wake.set()
        try:
            await asyncio.wait_for(asyncio.shield(fut), within + 2.0)
        except TimeoutError as exc:
            if fut in self._committing:  # the commit is out: wait for the broker's word
                await asyncio.wait_for(asyncio.shield(fut), self.commit_wait + 10.0)
                return
            fut.add_done_callback(_consume)
            raise PublishFailed(f"{self.name}: not committed in {within:g}s") from exc

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                group: list[Waiting] = []
                n = 0
                while self._queue and (not group or n + len(self._queue[0][0]) <= self.max_records):
                    item = self._queue.pop(0)
                    if item[2].done():
                        continue
                    group.append(item)
                    n += len(item[0])
                if group:
                    await self._commit(group)

    async def _commit(self, group: list[Waiting]) -> None:
        deadline = min(d for _, d, _ in group)
        durable = self._durable
        try:
            client, generation = await durable._current(deadline)
        except PublishFailed as exc:
            _fail(group, exc)
            return
        try:
            await client.begin_transaction()
            futures = [
                await client.send(r.topic, r.value, key=r.key, partition=r.partition)
                for records, _, _ in group
                for r in records
            ]
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("deadline passed before the records were written")
            await asyncio.wait_for(asyncio.gather(*futures), left)
            if time.monotonic() >= deadline:
                raise TimeoutError("deadline passed before the commit")
        except PERMANENT as exc:
            # one caller's record is refused for good: abort, and let the others try again
            await self._abort(client, generation, exc)
            _fail(group, PublishFailed(f"{self.name}: {exc!r}"))
            return
        except (KafkaError, OSError, TimeoutError) as exc:
            await self._abort(client, generation, exc)
            _fail(group, PublishFailed(f"{self.name}: {exc!r}"))
            return
        futures_of_group = {fut for _, _, fut in group}
        self._committing |= futures_of_group
        try:
            await asyncio.wait_for(client.commit_transaction(), self.commit_wait)
        except (KafkaError, OSError, TimeoutError) as exc:
            # refused, or no answer at all in commit_wait: as likely not written (callers that
            # already left are withdrawn by the publisher)
            await self._abort(client, generation, exc)
            _fail(group, PublishFailed(f"{self.name}: commit failed: {exc!r}"))
            return
        finally:
            self._committing -= futures_of_group
        self.transactions += 1
        for _, _, fut in group:
            if not fut.done():
                fut.set_result(None)

    async def _abort(self, client: AIOKafkaProducer, generation: int, exc: BaseException) -> None:
        """Abort the open transaction; a client that cannot is replaced (the new one, with the
        same transactional id, aborts it when it starts)."""
        try:
            await asyncio.wait_for(client.abort_transaction(), 5)
        except Exception as abort_exc:
            self._durable._failed(generation, abort_exc)
            return
        if not isinstance(exc, PERMANENT):
            self._durable._failed(generation, exc)


def _fail(group: list[Waiting], exc: BaseException) -> None:
    for _, _, fut in group:
        if not fut.done():
            fut.set_exception(exc)
