"""Following whole topics without a consumer group: every replica reads every partition.

The reference view and the lifecycle projection both hold state folded from topics that each
process must see entirely. :class:`LogFollower` assigns all partitions of its topics, starts
from the beginning (or from offsets the subclass stored), hands each fetched batch to
:meth:`LogFollower.handle`, reports ``caught_up`` once it has reached the end offsets it saw at
start, and wakes :meth:`LogFollower.wait_until` callers after every batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord
from aiokafka.structs import TopicPartition

from kairos.kafka.clients import make_consumer, partitions_of_topics, start_groupless
from kairos.logging import get_logger

log = get_logger("kairos.follow")

Batch = Mapping[TopicPartition, Sequence[ConsumerRecord[bytes, bytes]]]


class LogFollower:
    """Base class: subclasses implement :meth:`handle` (and may override
    :meth:`start_offsets`)."""

    def __init__(self, bootstrap: str, topics: Mapping[str, str], **consumer_options: Any) -> None:
        """``topics`` maps each full topic name to the logical name ``handle`` is given."""
        self.bootstrap = bootstrap
        self._names = dict(topics)
        self._options = consumer_options
        self._consumer: AIOKafkaConsumer | None = None
        #: reads the high watermarks (uncommitted ends) for :meth:`end_offsets`
        self._high: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self._tps: list[TopicPartition] = []
        self._caught_up = asyncio.Event()
        self._changed = asyncio.Condition()
        #: the next offset of each partition after what was handled: past transaction markers
        #: too, which no record's offset + 1 ever reaches
        self.positions: dict[TopicPartition, int] = {}

    def logical(self, tp: TopicPartition) -> str:
        return self._names[tp.topic]

    async def handle(self, batch: Batch) -> None:
        """Fold one fetched batch (records in order per partition)."""
        raise NotImplementedError

    def start_offsets(self) -> dict[tuple[str, int], int]:
        """Where to resume: (logical topic, partition) -> next offset; the rest from the start."""
        return {}

    @property
    def caught_up(self) -> bool:
        """True once everything that was in the topics at start-up has been handled."""
        return self._caught_up.is_set()

    async def start(self) -> None:
        consumer = make_consumer(self.bootstrap, None, **self._options)
        await start_groupless(consumer)
        tps = await partitions_of_topics(consumer, self._names)
        consumer.assign(tps)
        stored = self.start_offsets()
        for tp in tps:
            nxt = stored.get((self.logical(tp), tp.partition))
            if nxt is None:
                await consumer.seek_to_beginning(tp)
            else:
                consumer.seek(tp, nxt)
        ends = await consumer.end_offsets(tps)
        self._consumer, self._tps = consumer, tps
        if _committed_only(self._options):
            high = make_consumer(self.bootstrap, None, isolation_level="read_uncommitted")
            try:
                await start_groupless(high)
            except BaseException:
                await high.stop()
                raise
            self._high = high
        self._task = asyncio.create_task(self._follow(consumer, ends))

    async def _follow(self, consumer: AIOKafkaConsumer, ends: dict[TopicPartition, int]) -> None:
        behind = {tp for tp, end in ends.items() if end > 0}
        while True:
            try:
                batch = await consumer.getmany(timeout_ms=100, max_records=2000)
                if batch:
                    await self.handle(batch)
                moved = False
                for tp in self._tps:
                    position = await consumer.position(tp)
                    if self.positions.get(tp) != position:
                        self.positions[tp], moved = position, True
                    if tp in behind and position >= ends[tp]:
                        behind.discard(tp)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the client reconnects by itself; keep following
                log.warning("fetch failed", error=repr(exc)[:200])
                await asyncio.sleep(1)
                continue
            if not behind:
                self._caught_up.set()
            if batch or moved:
                async with self._changed:
                    self._changed.notify_all()

    async def wait_caught_up(self, limit: float | None = 60) -> None:
        """Return once everything that was in the topics at start-up has been handled."""
        await asyncio.wait_for(self._caught_up.wait(), limit)

    async def wait_until(self, predicate: Callable[[Any], bool], limit: float = 10) -> bool:
        """Wait (at most ``limit`` seconds) until ``predicate(self)`` holds after a batch."""

        async def wait() -> None:
            async with self._changed:
                await self._changed.wait_for(lambda: predicate(self))

        try:
            await asyncio.wait_for(wait(), limit)
        except TimeoutError:
            return False
        return True

    def reached(self, ends: Mapping[TopicPartition, int]) -> bool:
        """Whether everything up to ``ends`` (end offsets) has been handled."""
        return all(self.positions.get(tp, 0) >= end for tp, end in ends.items() if end > 0)

    async def end_offsets(self, limit: float) -> dict[TopicPartition, int] | None:
        """The topics' end offsets, once every transaction under way now has ended
        (:func:`settled_end_offsets`; None when the broker does not answer in time)."""
        if self._consumer is None:
            return None
        try:
            # half the limit for the transactions to end, then the ends as they are
            return await asyncio.wait_for(
                settled_end_offsets(self._consumer, self._high, self._tps, limit / 2), limit
            )
        except Exception:
            return None

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for consumer in (self._consumer, self._high):
            if consumer is not None:
                with contextlib.suppress(Exception):
                    await consumer.stop()


async def read_to_end(
    bootstrap: str,
    topic: str,
    within: float = 60.0,
    keep: Callable[[ConsumerRecord[bytes, bytes]], bool] | None = None,
    **consumer_options: Any,
) -> list[ConsumerRecord[bytes, bytes]]:
    """Every record of ``topic`` from its beginning up to its end offsets at the time of the
    call (committed records only, unless ``isolation_level`` says otherwise), once every
    transaction under way at the call has ended (waiting at most half of ``within`` for
    them): all that was acknowledged before the call. In order within each partition.
    ``keep``: only the records it is true of (the rest are read and dropped). Raises
    ``LookupError`` for a topic that does not exist, ``TimeoutError`` when ``within`` seconds
    pass first."""
    deadline = time.monotonic() + within
    consumer = make_consumer(bootstrap, None, **consumer_options)
    high = (
        make_consumer(bootstrap, None, isolation_level="read_uncommitted")
        if _committed_only(consumer_options)
        else None
    )
    out: list[ConsumerRecord[bytes, bytes]] = []
    try:
        await start_groupless(consumer)
        tps = await partitions_of_topics(consumer, [topic])
        if not tps:
            raise LookupError(f"no topic {topic}")
        consumer.assign(tps)
        if high is not None:
            await start_groupless(high)
        ends = await settled_end_offsets(consumer, high, tps, within / 2)
        await consumer.seek_to_beginning(*tps)
        remaining = {tp for tp in tps if await consumer.position(tp) < ends[tp]}
        while remaining:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{topic}: not read to {ends} within {within}s")
            batch = await consumer.getmany(*remaining, timeout_ms=200)
            for tp, records in batch.items():
                out.extend(r for r in records if r.offset < ends[tp] and (keep is None or keep(r)))
            for tp in list(remaining):
                if await consumer.position(tp) >= ends[tp]:
                    remaining.discard(tp)
    finally:
        for c in (consumer, high):
            if c is not None:
                await c.stop()
    return out


def _committed_only(consumer_options: Mapping[str, Any]) -> bool:
    level: str = consumer_options.get("isolation_level", "read_committed")
    return level == "read_committed"


async def settled_end_offsets(
    committed: AIOKafkaConsumer,
    high: AIOKafkaConsumer | None,
    tps: Sequence[TopicPartition],
    within: float,
) -> dict[TopicPartition, int]:
    """``committed``'s end offsets of ``tps`` once every transaction under way at the call
    has ended (committed or aborted), waiting at most ``within`` seconds (then the ends as
    they are).

    A producer's commit returns once the coordinator has decided; the markers that end the
    transaction in each partition are written after that, and a ``read_committed`` reader's
    end offset (the last stable offset) stays short of the transaction's records until its
    marker is in. So a reader asking "what was acknowledged before now" just after a commit
    was acknowledged may not see it yet. The high watermark (``high``, a
    ``read_uncommitted`` consumer; None when ``committed`` reads uncommitted records anyway)
    at the call covers every record written before it; once the stable offset has reached
    it, every transaction that was open has ended."""
    ends: dict[TopicPartition, int] = await committed.end_offsets(tps)
    if high is None:
        return ends
    marks: dict[TopicPartition, int] = await high.end_offsets(tps)
    deadline = time.monotonic() + within
    while any(ends[tp] < marks[tp] for tp in tps) and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
        ends = await committed.end_offsets(tps)
    # nothing written after the call
    return {tp: min(end, marks[tp]) for tp, end in ends.items()}
