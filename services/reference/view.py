"""The reference view: accounts, API keys, domains and suppressions, rebuilt from their
compacted topics and kept following them.

Every process that decides anything (ingest at submit time, the validator at send time) holds
one. It reads all partitions of the four topics from the beginning (no consumer group: every
replica sees everything), reports ``caught_up`` once it has reached the end offsets it saw at
start, and applies later changes as they arrive (typically within tens of milliseconds).
"""

from __future__ import annotations

import hashlib
from typing import Any

from kairos.kafka.follow import Batch, LogFollower
from kairos.logging import get_logger
from kairos.settings import KairosSettings
from schemas.codec import DecodeError, decode_as
from schemas.reference import (
    AccountState,
    ApiKeyState,
    BatchState,
    DomainState,
    SuppressionState,
)

log = get_logger("services.reference")

REFERENCE_TOPICS = ("accounts", "api-keys", "domains", "suppressions", "batches")

_MODELS: dict[str, type[Any]] = {
    "accounts": AccountState,
    "api-keys": ApiKeyState,
    "domains": DomainState,
    "suppressions": SuppressionState,
    "batches": BatchState,
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
        self.batches: dict[str, BatchState] = {}

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
            "batches": self.batches,
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

    def batch(self, account_id: str, batch_id: str) -> BatchState | None:
        """A batch of this account (another account's batch is as good as unknown)."""
        b = self.batches.get(batch_id)
        return b if b is not None and b.account_id == account_id else None

    def keys_of(self, account_id: str) -> list[ApiKeyState]:
        return [k for k in self.keys.values() if k.account_id == account_id]


class ReferenceView(ReferenceState, LogFollower):
    """A :class:`ReferenceState` fed from Kafka in the background."""

    def __init__(self, settings: KairosSettings, bootstrap: str) -> None:
        ReferenceState.__init__(self)
        LogFollower.__init__(self, bootstrap, {settings.topic(t): t for t in REFERENCE_TOPICS})
        self.settings = settings

    async def handle(self, batch: Batch) -> None:
        for tp, records in batch.items():
            for r in records:
                self.apply(self.logical(tp), r.key.decode() if r.key else "", r.value)
