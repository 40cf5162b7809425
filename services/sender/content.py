"""The claim check's other end: a message's text read back from the schedule stream.

The timer keeps only a message's envelope and where its ``scheduled`` event is (partition,
offset); ``due`` and ``dispatch`` carry that reference, so the text is written to Kafka once.
The sender reads the texts of a fetch's dispatches here, in as few reads as it can: the
references of every call waiting are served together, each partition's offsets read in runs
(offsets close together are read through, far ones sought to), all partitions at once.

The schedule stream keeps its events longer than a message can be pending (35 days against
the 30-day horizon); a text that is gone all the same (its offset below the partition's
first or past its end, or the record there is not that message's ``scheduled`` event, as
after the topic was recreated) is reported missing, and the sender records a ``failed``
outcome for it: never another message's text, never an empty one.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Iterable

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import OffsetOutOfRangeError
from aiokafka.structs import TopicPartition

from kairos.kafka.clients import make_consumer, partitions_of_topics, start_groupless
from kairos.logging import get_logger
from kairos.metrics import count
from schemas.codec import decode_as
from schemas.events import MessageContent, Scheduled

log = get_logger("kairos.sender.content")

Ref = tuple[int, int]
#: whose text a reference should hold: (message id, attempt)
Owner = tuple[str, int]
Found = dict[Ref, MessageContent | None]

#: wanted offsets at most this far apart are read through rather than sought to
GAP = 200
#: bytes per partition per fetch: a seek to a far offset reads this much past it (a larger
#: record still comes whole)
FETCH_BYTES = 512 * 1024


class ContentUnavailable(OSError):
    """The schedule stream could not be read (broker trouble): the batch is tried again."""


def runs(offsets: Iterable[int], gap: int = GAP) -> list[tuple[int, int]]:
    """Sorted ``offsets`` as (first, last) runs: a new run starts where the next offset is
    more than ``gap`` past the last one."""
    out: list[tuple[int, int]] = []
    for o in sorted(set(offsets)):
        if out and o - out[-1][1] <= gap:
            out[-1] = (out[-1][0], o)
        else:
            out.append((o, o))
    return out


def content_of(value: bytes, owner: Owner) -> MessageContent | None:
    """The content of an encoded ``scheduled`` event of ``owner`` (message id, attempt); None
    for any other record (another message's, another type, undecodable)."""
    try:
        ev: Scheduled = decode_as(value, Scheduled)
    except ValueError:
        return None
    if (ev.message_id, ev.attempt) != owner:
        return None
    return ev.content


class ContentReader:
    """Reads ``scheduled`` events' contents from ``topic`` by (partition, offset)."""

    def __init__(self, bootstrap: str, topic: str, timeout: float = 30.0) -> None:
        self.topic = topic
        self.timeout = timeout
        # an offset out of range raises (and the read is tried again, with fresh bounds)
        # rather than jumping to an end and answering a text that is there as missing
        self._consumer: AIOKafkaConsumer = make_consumer(
            bootstrap, None, auto_offset_reset="none", max_partition_fetch_bytes=FETCH_BYTES
        )
        self._tps: dict[int, TopicPartition] = {}
        #: each partition's (first offset, end offset) as last asked: the end only grows and
        #: the first moves only when retention deletes, so they are asked again only for an
        #: offset outside them, or after a read ran out of range
        self._bounds: dict[TopicPartition, tuple[int, int]] = {}
        self._waiting: list[tuple[dict[Ref, Owner], asyncio.Future[Found]]] = []
        self._runner: asyncio.Task[None] | None = None
        self.reads = 0
        #: how many times the partitions' bounds were asked of the broker
        self.bounds_asked = 0

    async def start(self) -> None:
        await start_groupless(self._consumer)
        await self._assign()

    async def _assign(self) -> None:
        tps = await partitions_of_topics(self._consumer, [self.topic])
        self._tps = {tp.partition: tp for tp in tps}
        self._consumer.assign(tps)
        self._consumer.pause(*tps)

    async def stop(self) -> None:
        if self._runner is not None:
            self._runner.cancel()
        self._answer(self._waiting, ContentUnavailable("the sender is stopping"))
        self._waiting = []
        await self._consumer.stop()

    async def fetch(self, refs: dict[Ref, Owner]) -> Found:
        """The content at each reference, if it is its owner's ``scheduled`` event (None: not
        there). Calls that arrive while a read is under way share the next one."""
        if not refs:
            return {}
        fut: asyncio.Future[Found] = asyncio.get_running_loop().create_future()
        self._waiting.append((dict(refs), fut))
        if self._runner is None or self._runner.done():
            self._runner = asyncio.create_task(self._run())
        return await fut

    @staticmethod
    def _answer(
        waiting: list[tuple[dict[Ref, Owner], asyncio.Future[Found]]],
        outcome: Found | BaseException,
    ) -> None:
        for refs, fut in waiting:
            if fut.done():
                continue
            if isinstance(outcome, BaseException):
                fut.set_exception(outcome)
            else:
                fut.set_result({r: outcome.get(r) for r in refs})

    async def _run(self) -> None:
        await asyncio.sleep(0)  # let the calls of one fetch's partitions join this read
        while self._waiting:
            waiting, self._waiting = self._waiting, []
            wanted: dict[Ref, Owner] = {}
            for refs, _ in waiting:
                wanted.update(refs)
            try:
                found = await asyncio.wait_for(self._read(wanted), self.timeout)
            except asyncio.CancelledError:
                self._answer(waiting, ContentUnavailable("the sender is stopping"))
                raise
            except Exception as exc:  # whatever it was, no caller is left waiting
                self._answer(waiting, ContentUnavailable(f"schedule stream unread: {exc!r}"[:300]))
                continue
            self._answer(waiting, found)

    async def _read(self, wanted: dict[Ref, Owner]) -> Found:
        """One read of every wanted reference: each partition's runs in turn, the partitions
        side by side. A reference outside its partition's bounds is missing."""
        try:
            return await self._read_within(wanted)
        except OffsetOutOfRangeError:
            # retention moved a partition's first offset since its bounds were asked
            self._bounds.clear()
            return await self._read_within(wanted)

    async def _read_within(self, wanted: dict[Ref, Owner]) -> Found:
        by_partition: dict[int, list[int]] = defaultdict(list)
        for p, o in wanted:
            by_partition[p].append(o)
        if any(p not in self._tps for p in by_partition):
            await self._assign()  # the stream gained partitions
        consumer = self._consumer
        tps = [self._tps[p] for p in by_partition if p in self._tps]
        # asked again for an offset outside the bounds known: past the end (written since),
        # or before the first (the topic was recreated since)
        stale = [
            tp
            for tp in tps
            if tp not in self._bounds
            or max(by_partition[tp.partition]) >= self._bounds[tp][1]
            or min(by_partition[tp.partition]) < self._bounds[tp][0]
        ]
        if stale:
            self.bounds_asked += 1
            firsts = await consumer.beginning_offsets(stale)
            ends = await consumer.end_offsets(stale)
            self._bounds.update({tp: (firsts[tp], ends[tp]) for tp in stale})
        todo: dict[TopicPartition, list[tuple[int, int]]] = {}
        for tp in tps:
            first, end = self._bounds[tp]
            inside = [o for o in by_partition[tp.partition] if first <= o < end]
            if inside:
                todo[tp] = runs(inside)
                consumer.seek(tp, todo[tp][0][0])
        found: Found = {}
        active = set(todo)
        consumer.resume(*active)
        try:
            while active:
                batch = await consumer.getmany(*active, timeout_ms=1000)
                self.reads += 1
                for tp, records in batch.items():
                    for r in records:
                        ref = (tp.partition, r.offset)
                        owner = wanted.get(ref)
                        if owner is not None and r.value is not None:
                            content = content_of(r.value, owner)
                            if content is not None:
                                found[ref] = content
                # runs wholly behind a partition's position were read (a record skipped by
                # read_committed, an aborted one or a marker, is not there to find)
                for tp in list(active):
                    rs = todo[tp]
                    position = await consumer.position(tp)
                    while rs and position > rs[0][1]:
                        rs.pop(0)
                    if not rs:
                        consumer.pause(tp)
                        active.discard(tp)
                    elif position < rs[0][0]:
                        consumer.seek(tp, rs[0][0])
        finally:
            consumer.pause(*todo)
        missing = wanted.keys() - found.keys()
        if missing:
            count("sender", "content_missing", len(missing))
            log.warning("message texts not in the schedule stream", missing=len(missing))
        return found
