"""The reference view: accounts, API keys, domains and suppressions, rebuilt from their
compacted topics and kept following them.

Every process that decides anything (ingest at submit time, the validator at send time) holds
one. It reads all partitions of the four topics from the beginning (no consumer group: every
replica sees everything), reports ``caught_up`` once it has reached the end offsets it saw at
start, and applies later changes as they arrive (typically within tens of milliseconds).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition

from kairos.kafka.clients import make_consumer
from kairos.logging import get_logger
from kairos.settings import KairosSettings
from schemas.codec import DecodeError, decode_as
from schemas.reference import AccountState, ApiKeyState, DomainState, SuppressionState

log = get_logger("kairos.refdata")

REFERENCE_TOPICS = ("accounts", "api-keys", "domains", "suppressions")

_MODELS: dict[str, type[Any]] = {
    "accounts": AccountState,
    "api-keys": ApiKeyState,
    "domains": DomainState,
    "suppressions": SuppressionState,
}


def key_hash(api_key: str) -> str:
    """SHA-256 (hex) of an API key. Keys are 256-bit random tokens, so a fast unsalted hash is
    enough: there is nothing to brute-force, and lookups stay O(1)."""
    return hashlib.sha256(api_key.encode()).hexdigest()


class ReferenceState:
    """The current reference data (pure: ``apply`` records, query, compare)."""

    def __init__(self) -> None:
        self.accounts: dict[str, AccountState] = {}
        self.keys: dict[str, ApiKeyState] = {}
        self.domains: dict[str, DomainState] = {}
        self.suppressions: dict[str, SuppressionState] = {}

    def apply(self, logical_topic: str, key: str, value: bytes | None) -> None:
        """Apply one record of a reference topic (a null value deletes the key)."""
        table = self.table(logical_topic)
        model = _MODELS[logical_topic]
        if value is None:
            table.pop(key, None)
            return
        try:
            table[key] = decode_as(value, model)
        except DecodeError as exc:
            log.error("bad reference record skipped", topic=logical_topic, error=str(exc)[:200])

    def table(self, logical_topic: str) -> dict[str, Any]:
        """The dict holding the entities of reference topic ``logical_topic``."""
        tables: dict[str, dict[str, Any]] = {
            "accounts": self.accounts,
            "api-keys": self.keys,
            "domains": self.domains,
            "suppressions": self.suppressions,
        }
        return tables[logical_topic]

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """Everything, as plain data (for comparing two views)."""
        return {
            name: {k: v.model_dump(mode="json") for k, v in self.table(name).items()}
            for name in REFERENCE_TOPICS
        }

    # -- lookups ---------------------------------------------------------------------------

    def authenticate(self, api_key: str) -> AccountState | None:
        """The account of an active API key, or None (unknown or revoked key)."""
        key = self.keys.get(key_hash(api_key))
        if key is None or key.status != "active":
            return None
        return self.accounts.get(key.account_id)

    def account(self, account_id: str) -> AccountState | None:
        return self.accounts.get(account_id)

    def domain(self, account_id: str, domain: str) -> DomainState | None:
        return self.domains.get(f"{account_id}/{domain.lower()}")

    def domain_verified(self, account_id: str, domain: str) -> bool:
        d = self.domain(account_id, domain)
        return d is not None and d.verified

    def suppression(self, account_id: str, address: str) -> SuppressionState | None:
        return self.suppressions.get(f"{account_id}/{address.lower()}")

    def suppression_reason(self, account_id: str, address: str) -> str | None:
        s = self.suppression(account_id, address)
        return s.reason if s is not None else None

    def keys_of(self, account_id: str) -> list[ApiKeyState]:
        return [k for k in self.keys.values() if k.account_id == account_id]


class ReferenceView(ReferenceState):
    """A :class:`ReferenceState` fed from Kafka in the background."""

    def __init__(self, settings: KairosSettings, bootstrap: str) -> None:
        super().__init__()
        self.settings, self.bootstrap = settings, bootstrap
        self._names = {settings.topic(t): t for t in REFERENCE_TOPICS}
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self._caught_up = asyncio.Event()
        self._changed = asyncio.Condition()

    @property
    def caught_up(self) -> bool:
        """True once the view has read everything that was in the log when it started."""
        return self._caught_up.is_set()

    async def start(self) -> None:
        consumer = make_consumer(self.bootstrap, None)
        await consumer.start()
        await asyncio.sleep(0)  # let aiokafka's coordinator task start (see sender service)
        cluster = await consumer._client.fetch_all_metadata()
        tps = [
            TopicPartition(t, p)
            for t in self._names
            for p in sorted(cluster.partitions_for_topic(t) or ())
        ]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        self._consumer = consumer
        self._task = asyncio.create_task(self._follow(consumer, ends))

    async def _follow(self, consumer: AIOKafkaConsumer, ends: dict[TopicPartition, int]) -> None:
        behind = {tp for tp, end in ends.items() if end > 0}
        if not behind:
            self._caught_up.set()
        while True:
            batch = await consumer.getmany(timeout_ms=100)
            for tp, records in batch.items():
                for r in records:
                    self.apply(self._names[tp.topic], r.key.decode() if r.key else "", r.value)
            if behind:
                for tp in list(behind):
                    if await consumer.position(tp) >= ends[tp]:
                        behind.discard(tp)
                if not behind:
                    self._caught_up.set()
            if batch:
                async with self._changed:
                    self._changed.notify_all()

    async def wait_caught_up(self, limit: float | None = 60) -> None:
        """Return once the view has caught up with the log as it was at start-up."""
        await asyncio.wait_for(self._caught_up.wait(), limit)

    async def wait_until(self, predicate: Any, limit: float = 10) -> bool:
        """Wait until ``predicate(self)`` holds (read-your-writes after a publish)."""

        async def wait() -> None:
            async with self._changed:
                await self._changed.wait_for(lambda: predicate(self))

        try:
            await asyncio.wait_for(wait(), limit)
        except TimeoutError:
            return False
        return True

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._consumer is not None:
            await self._consumer.stop()
