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

Every record carries its own expiry (``expires_at``, written by the replica that wrote it), so
every replica reading the log decides the same way whatever its own settings: a claim that is
still in flight lives only until its in-flight expiry (``idempotency_in_flight_timeout``, a
minute by default), so a request that died (kill -9 of its replica) frees its key soon; a
completed claim is replayed for 24 h. A winner whose claim expired before it published does not
publish. The topic is a plain retained log (not compacted: compaction would keep the last record
of a key, not the first claim).

A broker that cannot take or show a claim in time is :class:`IdempotencyUnavailable` (a
``SubmitError``: 503 ``BROKER_UNAVAILABLE`` / 451 4.3.0); writing ``completed`` or ``released``
is best effort (the claim's expiry covers a write that failed).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import heapq
import json
from dataclasses import dataclass
from typing import Any, Literal

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from kairos.clock import Clock
from kairos.kafka.clients import make_consumer, partitions_of_topics, start_groupless
from kairos.logging import get_logger
from kairos.settings import KairosSettings
from services.ingest.compose import SubmitError

log = get_logger("kairos.ingest.idempotency")

#: How long a completed key answers with its first response.
TTL_SECONDS = 24 * 3600
#: How often keys past their expiry are dropped from memory.
SWEEP_EVERY = 60.0
#: How long a claim whose request has not completed holds its key (the setting's default).
IN_FLIGHT_SECONDS: float = KairosSettings.model_fields["idempotency_in_flight_timeout"].default
MAX_KEY_LENGTH = 256
_FIELDS = ("key", "state", "claim_id", "body_hash", "at", "response", "expires_at")


class IdempotencyUnavailable(SubmitError):
    """The claim could not be written or its verdict read in time: transient, retry."""

    def __init__(self) -> None:
        super().__init__(
            "BROKER_UNAVAILABLE", "could not claim the idempotency key; retry", None, 503
        )


def key_digest(account_id: str, key: str) -> str:
    """The record key of an idempotency key: SHA-256 of the account and the key."""
    return hashlib.sha256(f"{account_id}\0{key}".encode()).hexdigest()


def body_digest(body: Any) -> str:
    """A hash of a request body that ignores key order (any JSON value: integers beyond 64
    bits too)."""
    try:
        data = orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
    except TypeError:  # what orjson does not write (a huge integer): the standard library
        data = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Record:
    key: str
    state: Literal["claimed", "completed", "released"]
    claim_id: str
    body_hash: str
    at: float
    response: dict[str, Any] | None = None
    #: Until when this record counts: for a claim, its in-flight expiry; for a completion,
    #: until when it is replayed. None (records written before there was one): ``at`` plus
    #: the defaults.
    expires_at: float | None = None

    def encode(self) -> bytes:
        return orjson.dumps(self.__dict__)

    @classmethod
    def decode(cls, value: bytes | None) -> Record | None:
        """A record of the topic, or None for a value that is not one (it cannot be a claim)."""
        try:
            data = orjson.loads(value or b"")
            return cls(**{k: data[k] for k in _FIELDS if k in data})
        except (orjson.JSONDecodeError, TypeError, KeyError):
            return None

    def expiry(self, default: float) -> float:
        return self.expires_at if self.expires_at is not None else self.at + default


@dataclass(frozen=True)
class Decision:
    """``proceed`` (this request is the winner), ``replay`` (answer ``response``),
    ``in_flight`` or ``mismatch``."""

    kind: Literal["proceed", "replay", "in_flight", "mismatch"]
    response: dict[str, Any] | None = None
    #: For ``proceed``: when this claim stops holding the key; publish only before it.
    expires_at: float | None = None


def decide(records: list[Record], mine: Record, now: float) -> Decision:
    """The decision for claim ``mine`` given every record of its key in log order (pure).

    A claim holds the key while it is not released and either completed (until the
    completion's expiry) or in flight (until the claim's own expiry): the first such claim
    in log order wins."""
    released = {r.claim_id for r in records if r.state == "released"}
    completed = {r.claim_id: r for r in records if r.state == "completed"}

    def holds(claim: Record) -> bool:
        if claim.state != "claimed" or claim.claim_id in released:
            return False
        done = completed.get(claim.claim_id)
        if done is not None:
            return now < done.expiry(TTL_SECONDS)
        return now < claim.expiry(IN_FLIGHT_SECONDS)

    winner = next((r for r in records if holds(r)), mine)
    if winner.claim_id == mine.claim_id:
        return Decision("proceed", expires_at=mine.expiry(IN_FLIGHT_SECONDS))
    if winner.body_hash != mine.body_hash:
        return Decision("mismatch")
    if winner.claim_id in completed:
        return Decision("replay", completed[winner.claim_id].response)
    return Decision("in_flight")


class IdempotencyLog:
    """Follows the ``idempotency`` topic and arbitrates claims."""

    def __init__(
        self,
        producer: AIOKafkaProducer,
        bootstrap: str,
        topic: str,
        clock: Clock,
        in_flight_timeout: float = IN_FLIGHT_SECONDS,
        timeout: float = 10.0,
    ) -> None:
        self.producer, self.bootstrap, self.topic, self.clock = producer, bootstrap, topic, clock
        #: how long this replica's claims hold their key while in flight
        self.in_flight_timeout = in_flight_timeout
        #: how long writing a record, and then reading the verdict, may take
        self.timeout = timeout
        self.records: dict[str, list[Record]] = {}
        #: (expiry, key) of every record held, earliest first: what a sweep looks at
        self._expiries: list[tuple[float, str]] = []
        self._positions: dict[int, int] = {}
        self._moved = asyncio.Condition()
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        consumer = make_consumer(self.bootstrap, None)
        await start_groupless(consumer)
        tps = await partitions_of_topics(consumer, [self.topic])
        consumer.assign(tps)
        since = int((self.clock.now() - TTL_SECONDS) * 1000)
        starts = await consumer.offsets_for_times({tp: since for tp in tps})
        ends = await consumer.end_offsets(tps)
        for tp in tps:
            found = starts.get(tp)
            consumer.seek(tp, found.offset if found is not None else ends[tp])
        self._consumer = consumer
        self._task = asyncio.create_task(self._follow(consumer))

    def add(self, record: Record) -> None:
        """Hold ``record`` (read from the topic) until it expires."""
        self.records.setdefault(record.key, []).append(record)
        heapq.heappush(self._expiries, (record.expiry(TTL_SECONDS), record.key))

    def sweep(self, now: float) -> int:
        """Forget the keys none of whose records holds any more at ``now`` (a record past its
        expiry never decides anything): the in-memory log stays as large as one day of keys,
        however long the replica runs. Looks only at the records that expired since the last
        sweep (a heap by expiry), never at every key. Returns how many keys were forgotten."""
        gone = 0
        while self._expiries and self._expiries[0][0] <= now:
            _, key = heapq.heappop(self._expiries)
            records = self.records.get(key)
            if records is not None and all(r.expiry(TTL_SECONDS) <= now for r in records):
                del self.records[key]
                gone += 1
        return gone

    async def _follow(self, consumer: AIOKafkaConsumer) -> None:
        swept = self.clock.now()
        while True:
            if self.clock.now() - swept >= SWEEP_EVERY:
                swept = self.clock.now()
                self.sweep(swept)
            batch = await consumer.getmany(timeout_ms=50)
            for tp, records in batch.items():
                for r in records:
                    rec = Record.decode(r.value)
                    if rec is not None:
                        self.add(rec)
                self._positions[tp.partition] = records[-1].offset + 1
            if batch:
                async with self._moved:
                    self._moved.notify_all()

    async def _write(self, record: Record) -> tuple[int, int]:
        meta = await asyncio.wait_for(
            self.producer.send_and_wait(self.topic, record.encode(), key=record.key.encode()),
            self.timeout,
        )
        return meta.partition, meta.offset

    async def _try_write(self, record: Record) -> bool:
        """Best effort: False (logged) when the record could not be written in time."""
        try:
            await self._write(record)
        except Exception as exc:  # the broker's errors are many; this write may be lost
            log.warning("idempotency record not written", state=record.state, error=repr(exc))
            return False
        return True

    async def claim(self, account_id: str, key: str, body_hash: str, claim_id: str) -> Decision:
        """Claim ``key`` for this request and wait for the log's verdict. Raises
        :class:`IdempotencyUnavailable` when the broker does not take the claim, or the log
        does not show it, within ``timeout`` each."""
        digest = key_digest(account_id, key)
        now = self.clock.now()
        mine = Record(
            digest, "claimed", claim_id, body_hash, now, expires_at=now + self.in_flight_timeout
        )
        try:
            partition, offset = await self._write(mine)
            async with self._moved:
                await asyncio.wait_for(
                    self._moved.wait_for(lambda: self._positions.get(partition, -1) > offset),
                    self.timeout,
                )
        except Exception as exc:  # KafkaError, a timeout, a follower that stopped
            log.warning("idempotency claim failed", error=repr(exc))
            raise IdempotencyUnavailable() from exc
        decision = decide(self.records.get(digest, []), mine, self.clock.now())
        if decision.kind != "proceed":
            await self.release(account_id, key, claim_id)
        return decision

    async def complete(
        self, account_id: str, key: str, claim_id: str, response: dict[str, Any]
    ) -> None:
        """Record the winner's response, for later duplicates to replay (best effort: when it
        is not written, the claim frees the key at its in-flight expiry)."""
        now = self.clock.now()
        digest = key_digest(account_id, key)
        await self._try_write(
            Record(digest, "completed", claim_id, "", now, response, now + TTL_SECONDS)
        )

    async def release(self, account_id: str, key: str, claim_id: str) -> None:
        """Withdraw a claim (the request failed, or lost); best effort, as ``complete``."""
        now = self.clock.now()
        await self._try_write(
            Record(key_digest(account_id, key), "released", claim_id, "", now, expires_at=now)
        )

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._consumer is not None:
            await self._consumer.stop()
