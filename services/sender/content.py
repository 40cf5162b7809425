"""The claim check's other end: a message's text read back from the schedule stream.

The timer keeps only a message's envelope and where its ``scheduled`` event is (partition,
offset); ``due`` and ``dispatch`` carry that reference, so the text is written to Kafka once.
The sender reads the texts of a fetch's dispatches here, in as few reads as it can: the
references of every call waiting are served together, each partition's offsets read in runs
(offsets close together are read through, far ones sought to), all partitions at once.

The schedule stream keeps its events longer than a message can be pending (35 days against
the 30-day horizon); a text that is gone all the same (its offset below the partition's
first) is reported missing, and the sender records a ``failed`` outcome for it.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Iterable

import orjson
from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError
from aiokafka.structs import TopicPartition

from kairos.kafka.clients import make_consumer, partitions_of_topics, start_groupless
from kairos.logging import get_logger
from kairos.metrics import count
from schemas.events import MessageContent

log = get_logger("kairos.sender.content")

Ref = tuple[int, int]

#: wanted offsets at most this far apart are read through rather than sought to
GAP = 200


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


def content_of(value: bytes) -> MessageContent | None:
    """The content of an encoded ``scheduled`` event (None for any other record)."""
    obj = orjson.loads(value)
    if not isinstance(obj, dict) or obj.get("type") != "scheduled":
        return None
    return MessageContent.model_validate(obj["content"])


class ContentReader:
    """Reads ``scheduled`` events' contents from ``topic`` by (partition, offset)."""

    def __init__(self, bootstrap: str, topic: str, timeout: float = 30.0) -> None:
        self.topic = topic
        self.timeout = timeout
        self._consumer: AIOKafkaConsumer = make_consumer(
            bootstrap, None, auto_offset_reset="latest"
        )
        self._tps: dict[int, TopicPartition] = {}
        self._waiting: list[tuple[set[Ref], asyncio.Future[dict[Ref, MessageContent | None]]]] = []
        self._runner: asyncio.Task[None] | None = None
        self.reads = 0

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
        await self._consumer.stop()

    async def fetch(self, refs: Iterable[Ref]) -> dict[Ref, MessageContent | None]:
        """The content at each reference (None: not there any more). Calls that arrive while
        a read is under way share the next one."""
        wanted = set(refs)
        if not wanted:
            return {}
        fut: asyncio.Future[dict[Ref, MessageContent | None]] = (
            asyncio.get_running_loop().create_future()
        )
        self._waiting.append((wanted, fut))
        if self._runner is None or self._runner.done():
            self._runner = asyncio.create_task(self._run())
        return await fut

    async def _run(self) -> None:
        await asyncio.sleep(0)  # let the calls of one fetch's partitions join this read
        while self._waiting:
            waiting, self._waiting = self._waiting, []
            wanted: set[Ref] = set().union(*(w for w, _ in waiting))
            try:
                found = await asyncio.wait_for(self._read(wanted), self.timeout)
            except (KafkaError, OSError, TimeoutError) as exc:
                failure = ContentUnavailable(f"schedule stream unreadable: {exc!r}"[:300])
                for _, fut in waiting:
                    if not fut.done():
                        fut.set_exception(failure)
                continue
            for refs, fut in waiting:
                if not fut.done():
                    fut.set_result({r: found.get(r) for r in refs})

    async def _read(self, wanted: set[Ref]) -> dict[Ref, MessageContent | None]:
        """One read of every wanted reference: each partition's runs in turn, the partitions
        side by side."""
        by_partition: dict[int, list[int]] = defaultdict(list)
        for p, o in wanted:
            by_partition[p].append(o)
        if any(p not in self._tps for p in by_partition):
            await self._assign()  # the stream gained partitions
        todo = {self._tps[p]: runs(offsets) for p, offsets in by_partition.items()}
        firsts = await self._consumer.beginning_offsets(list(todo))
        found: dict[Ref, MessageContent | None] = {}
        consumer = self._consumer
        for tp, rs in todo.items():
            # what retention removed is gone: those references are answered missing
            while rs and rs[0][1] < firsts[tp]:
                rs.pop(0)
            if rs:
                consumer.seek(tp, max(rs[0][0], firsts[tp]))
        active = {tp for tp, rs in todo.items() if rs}
        consumer.resume(*active)
        try:
            while active:
                batch = await consumer.getmany(*active, timeout_ms=1000)
                self.reads += 1
                for tp, records in batch.items():
                    for r in records:
                        ref = (tp.partition, r.offset)
                        if ref in wanted and r.value is not None:
                            content = content_of(r.value)
                            if content is not None:
                                found[ref] = content
                    # runs wholly behind the position were read (or hold no such record)
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
        missing = wanted - found.keys()
        if missing:
            count("sender", "content_missing", len(missing))
            log.warning("message texts not in the schedule stream", missing=len(missing))
        return found
