"""Idempotency keys (JetEmail's semantics) that hold across ingest replicas, with the Kafka log
as the arbiter: no process-local state decides.

A request with a key writes a *claim* to the ``idempotency`` topic, keyed by a hash of
(account, key) so every record of one key lands on one partition, in one order. Every replica
follows that topic; once a replica has read past its own claim, the *first* live claim of the key
in log order is the winner, whichever replica wrote it:

* the winner goes on, and then writes ``completed`` with the response it gave (or ``released``
  when it failed, so that a retry may proceed);
* a loser whose body differs answers ``IDEMPOTENCY_BODY_MISMATCH``;
* a loser with the same body answers the winner's response once it is completed, else
  ``IDEMPOTENCY_IN_FLIGHT``; a loser releases its own claim at once.

Claims expire after 24 h. The topic is a plain retained log (not compacted: compaction would
keep the last record of a key, not the first claim).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from dataclasses import dataclass
from typing import Any, Literal

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition

from kairos.clock import Clock
from kairos.kafka.clients import make_consumer

TTL_SECONDS = 24 * 3600
MAX_KEY_LENGTH = 256


def key_digest(account_id: str, key: str) -> str:
    """The record key of an idempotency key: SHA-256 of the account and the key."""
    return hashlib.sha256(f"{account_id}\0{key}".encode()).hexdigest()


def body_digest(body: Any) -> str:
    """A hash of a request body that ignores key order."""
    return hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()


@dataclass(frozen=True)
class Record:
    key: str
    state: Literal["claimed", "completed", "released"]
    claim_id: str
    body_hash: str
    at: float
    response: dict[str, Any] | None = None

    def encode(self) -> bytes:
        return orjson.dumps(self.__dict__)


@dataclass(frozen=True)
class Decision:
    """``proceed`` (this request is the winner), ``replay`` (answer ``response``),
    ``in_flight`` or ``mismatch``."""

    kind: Literal["proceed", "replay", "in_flight", "mismatch"]
    response: dict[str, Any] | None = None


def decide(records: list[Record], mine: Record, now: float, ttl: float = TTL_SECONDS) -> Decision:
    """The decision for claim ``mine`` given every record of its key in log order (pure)."""
    released = {r.claim_id for r in records if r.state == "released"}
    completed = {r.claim_id: r.response for r in records if r.state == "completed"}
    live = [
        r
        for r in records
        if r.state == "claimed" and r.claim_id not in released and now - r.at <= ttl
    ]
    winner = next(iter(live), mine)
    if winner.claim_id == mine.claim_id:
        return Decision("proceed")
    if winner.body_hash != mine.body_hash:
        return Decision("mismatch")
    if winner.claim_id in completed:
        return Decision("replay", completed[winner.claim_id])
    return Decision("in_flight")


class IdempotencyLog:
    """Follows the ``idempotency`` topic and arbitrates claims."""

    def __init__(
        self, producer: AIOKafkaProducer, bootstrap: str, topic: str, clock: Clock
    ) -> None:
        self.producer, self.bootstrap, self.topic, self.clock = producer, bootstrap, topic, clock
        self.records: dict[str, list[Record]] = {}
        self._positions: dict[int, int] = {}
        self._moved = asyncio.Condition()
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        consumer = make_consumer(self.bootstrap, None)
        await consumer.start()
        await asyncio.sleep(0)  # let aiokafka's coordinator task start (see the sender)
        cluster = await consumer._client.fetch_all_metadata()
        tps = [
            TopicPartition(self.topic, p)
            for p in sorted(cluster.partitions_for_topic(self.topic) or ())
        ]
        consumer.assign(tps)
        since = int((self.clock.now() - TTL_SECONDS) * 1000)
        starts = await consumer.offsets_for_times({tp: since for tp in tps})
        ends = await consumer.end_offsets(tps)
        for tp in tps:
            found = starts.get(tp)
            consumer.seek(tp, found.offset if found is not None else ends[tp])
        self._consumer = consumer
        self._task = asyncio.create_task(self._follow(consumer))

    async def _follow(self, consumer: AIOKafkaConsumer) -> None:
        while True:
            batch = await consumer.getmany(timeout_ms=50)
            for tp, records in batch.items():
                for r in records:
                    rec = Record(**orjson.loads(r.value))
                    self.records.setdefault(rec.key, []).append(rec)
                self._positions[tp.partition] = records[-1].offset + 1
            if batch:
                async with self._moved:
                    self._moved.notify_all()

    async def _write(self, record: Record) -> tuple[int, int]:
        meta = await self.producer.send_and_wait(
            self.topic, record.encode(), key=record.key.encode()
        )
        return meta.partition, meta.offset

    async def claim(self, account_id: str, key: str, body_hash: str, claim_id: str) -> Decision:
        """Claim ``key`` for this request and wait for the log's verdict."""
        digest = key_digest(account_id, key)
        mine = Record(digest, "claimed", claim_id, body_hash, self.clock.now())
        partition, offset = await self._write(mine)
        async with self._moved:
            await asyncio.wait_for(
                self._moved.wait_for(lambda: self._positions.get(partition, -1) > offset), 30
            )
        decision = decide(self.records.get(digest, []), mine, self.clock.now())
        if decision.kind != "proceed":
            await self.release(account_id, key, claim_id)
        return decision

    async def complete(
        self, account_id: str, key: str, claim_id: str, response: dict[str, Any]
    ) -> None:
        """Record the winner's response, for later duplicates to replay."""
        await self._write(
            Record(
                key_digest(account_id, key), "completed", claim_id, "", self.clock.now(), response
            )
        )

    async def release(self, account_id: str, key: str, claim_id: str) -> None:
        """Withdraw a claim (the request failed, or lost)."""
        await self._write(
            Record(key_digest(account_id, key), "released", claim_id, "", self.clock.now())
        )

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._consumer is not None:
            await self._consumer.stop()
