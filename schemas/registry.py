"""The topic registry: every topic Kairos uses, declared once.

Services, ``kairos topics apply``, the deploy manifests and the docs read topics from here; no
topic name is written anywhere else. Names here are logical; the full name is the configured
prefix (default ``kairos.``) followed by the logical name, e.g. ``kairos.outcomes``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from schemas.events import DeadLetter, Dispatch, Due, Outcome, ScheduleStreamEvent
from schemas.reference import (
    AccountState,
    ApiKeyState,
    BatchState,
    DomainState,
    SuppressionState,
)

DAY_MS = 24 * 3600 * 1000

#: Partitions of the message-keyed streams. The timer's state tables are partitioned the
#: same way (their changelogs must match the schedule stream), so this is the ceiling on
#: parallelism of every service.
MESSAGE_PARTITIONS = 8

#: Big enough for a 10 MB message (attachments included) after JSON/base64 overhead.
MAX_MESSAGE_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class TopicSpec:
    """One topic: what it carries, how it is kept, who writes and who reads it."""

    name: str
    description: str
    key: str
    value: Any
    partitions: int
    cleanup_policy: Literal["delete", "compact"]
    retention_ms: int | None
    producers: tuple[str, ...]
    consumers: tuple[str, ...]
    config: dict[str, str] = field(default_factory=dict)
    internal: bool = False

    def topic_config(self) -> dict[str, str]:
        """The Kafka topic-level configuration this spec implies."""
        cfg = {"cleanup.policy": self.cleanup_policy, **self.config}
        if self.retention_ms is not None:
            cfg["retention.ms"] = str(self.retention_ms)
        return cfg


_BIG = {"max.message.bytes": str(MAX_MESSAGE_BYTES)}

TOPICS: tuple[TopicSpec, ...] = (
    TopicSpec(
        name="schedule",
        description="Timer input: scheduled messages, lifecycle commands, retries and ticks, "
        "keyed by message id so everything about one message is ordered.",
        key="message_id (ticks: none, written to an explicit partition)",
        value=ScheduleStreamEvent,
        partitions=MESSAGE_PARTITIONS,
        cleanup_policy="delete",
        # longer than the 30-day horizon plus retries: the lifecycle projection of a new
        # ingest replica is rebuilt from it
        retention_ms=35 * DAY_MS,
        producers=("ingest", "sender", "timer"),
        consumers=("timer", "ingest"),
        # the broker's clock stamps each record: the timer withdraws a submission appended
        # after its accept_by (the submitter was refused)
        config={**_BIG, "message.timestamp.type": "LogAppendTime"},
    ),
    TopicSpec(
        name="due",
        description="Messages whose due second has come, emitted by the timer.",
        key="message_id",
        value=Due,
        partitions=MESSAGE_PARTITIONS,
        cleanup_policy="delete",
        retention_ms=7 * DAY_MS,
        producers=("timer",),
        consumers=("validator", "ingest"),
        config=_BIG,
    ),
    TopicSpec(
        name="dispatch",
        description="Due messages that passed send-time validation.",
        key="message_id",
        value=Dispatch,
        partitions=MESSAGE_PARTITIONS,
        cleanup_policy="delete",
        retention_ms=7 * DAY_MS,
        producers=("validator",),
        consumers=("sender",),
        config=_BIG,
    ),
    TopicSpec(
        name="outcomes",
        description="What happened to each message: delivered, deferred, failed, cancelled. "
        "The stable, versioned stream for analytics consumers.",
        key="message_id",
        value=Outcome,
        partitions=MESSAGE_PARTITIONS,
        cleanup_policy="delete",
        retention_ms=30 * DAY_MS,
        producers=("ingest", "timer", "validator", "sender"),
        consumers=("analytics", "ingest"),
    ),
    TopicSpec(
        name="dead-letter",
        description="Records a stage could not decode or process, with their origin (topic, "
        "partition, offset), the stage and the error; listed and replayed with "
        "`kairos dead-letter`.",
        key="origin topic:partition:offset",
        value=DeadLetter,
        partitions=1,
        cleanup_policy="delete",
        retention_ms=30 * DAY_MS,
        producers=("timer", "validator", "sender"),
        consumers=("operators",),
        config=_BIG,
    ),
    TopicSpec(
        name="accounts",
        description="Accounts and their plans: the latest state per account (compacted).",
        key="account_id",
        value=AccountState,
        partitions=1,
        cleanup_policy="compact",
        retention_ms=None,
        producers=("ingest",),
        consumers=("ingest", "validator"),
    ),
    TopicSpec(
        name="api-keys",
        description="API keys by SHA-256 (never in clear): account, active or revoked.",
        key="sha256 of the key (hex)",
        value=ApiKeyState,
        partitions=1,
        cleanup_policy="compact",
        retention_ms=None,
        producers=("ingest",),
        consumers=("ingest",),
    ),
    TopicSpec(
        name="domains",
        description="Sending domains per account, verified or not.",
        key="account_id/domain",
        value=DomainState,
        partitions=1,
        cleanup_policy="compact",
        retention_ms=None,
        producers=("ingest",),
        consumers=("ingest", "validator"),
    ),
    TopicSpec(
        name="suppressions",
        description="Suppressed addresses per account with a reason; removal is a tombstone.",
        key="account_id/address",
        value=SuppressionState,
        partitions=1,
        cleanup_policy="compact",
        retention_ms=None,
        producers=("ingest", "sender"),
        consumers=("ingest", "validator"),
    ),
    TopicSpec(
        name="batches",
        description="Batch ids per account and their scheduled-send status (pause, cancel).",
        key="batch_id",
        value=BatchState,
        partitions=1,
        cleanup_policy="compact",
        retention_ms=None,
        producers=("ingest",),
        consumers=("ingest",),
    ),
    TopicSpec(
        name="idempotency",
        description="Idempotency-key claims of ingest replicas; the first claim of a key in "
        "log order wins. Kept 48 h (keys live 24 h).",
        key="sha256 of account and idempotency key",
        value=None,
        partitions=MESSAGE_PARTITIONS,
        cleanup_policy="delete",
        retention_ms=2 * DAY_MS,
        producers=("ingest",),
        consumers=("ingest",),
        internal=True,
    ),
    TopicSpec(
        name="timer-pending-changelog",
        description="Changelog of the timer's pending-schedule table (message id -> schedule).",
        key="message_id",
        value=None,
        partitions=MESSAGE_PARTITIONS,
        cleanup_policy="compact",
        retention_ms=None,
        producers=("timer",),
        consumers=("timer",),
        config=_BIG,
        internal=True,
    ),
    TopicSpec(
        name="timer-index-changelog",
        description="Changelog of the timer's due-second index (partition, second, slot -> id).",
        key="index key",
        value=None,
        partitions=MESSAGE_PARTITIONS,
        cleanup_policy="compact",
        retention_ms=None,
        producers=("timer",),
        consumers=("timer",),
        internal=True,
    ),
)

_BY_NAME = {spec.name: spec for spec in TOPICS}

# Handles for code that names a topic: ``settings.topic(SCHEDULE)`` (a typo fails at import).
SCHEDULE = _BY_NAME["schedule"]
DUE = _BY_NAME["due"]
DISPATCH = _BY_NAME["dispatch"]
OUTCOMES = _BY_NAME["outcomes"]
DEAD_LETTER = _BY_NAME["dead-letter"]
ACCOUNTS = _BY_NAME["accounts"]
API_KEYS = _BY_NAME["api-keys"]
DOMAINS = _BY_NAME["domains"]
SUPPRESSIONS = _BY_NAME["suppressions"]
BATCHES = _BY_NAME["batches"]
IDEMPOTENCY = _BY_NAME["idempotency"]
TIMER_PENDING_CHANGELOG = _BY_NAME["timer-pending-changelog"]
TIMER_INDEX_CHANGELOG = _BY_NAME["timer-index-changelog"]


def copartitioned(topic_partitions: int | None, *specs: TopicSpec) -> bool:
    """Whether topics ``specs`` have as many partitions each (all of them ``topic_partitions``
    when it is set, else their specs'): then a record keyed by message id goes to the same
    partition number in each, and a service can give that number instead of hashing the key
    again for every record."""
    return topic_partitions is not None or len({s.partitions for s in specs}) == 1


def topic_spec(name: str) -> TopicSpec:
    """The spec of logical topic ``name``; KeyError names the known topics."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown topic {name!r}; known: {sorted(_BY_NAME)}") from None
