"""Writing a batch's table changes: the changelog first, then the stores.

faust writes a table's store at once and sends its changelog record in the background, one
record and one future per key, flushed before the source offsets are committed. The timer
writes its tables once per batch (:class:`~services.timer.buffered.Buffered`), in bulk and in
the other order:

1. every changed key's record goes to its table's changelog, in record batches per partition,
   and is acknowledged (retried through an outage, as the due events are);
2. then the stores are written by their own ``apply_changelog_batch``: the path faust's
   recovery applies a changelog by, which also records the changelog offset the store holds.

The order matters for a crash. A store that is ahead of its changelog finds a re-read
schedule already there and ignores it as a repeat, so the changelog would never get it, and a
worker recovering that partition from the changelog (a standby, a new disk) would not know
it. With the changelog first, a store never holds what its changelog lacks; a crash between
the two steps leaves the store behind, and recovery reads the rest from the changelog.

The records are those faust writes (same topic, partition, key and value; a delete is a
tombstone), so faust's recovery and standby replicas read them unchanged.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from faust.types import TP

from kairos.kafka.producer import Acknowledged, Record


@dataclass(frozen=True)
class Message:
    """A changelog record as a store's ``apply_changelog_batch`` reads one."""

    topic: str
    partition: int
    offset: int
    key: bytes
    value: bytes | None

    @property
    def tp(self) -> TP:
        return TP(self.topic, self.partition)


@dataclass(frozen=True)
class Change:
    """A changelog event (faust's ``EventT``, as far as a store looks at one)."""

    message: Message

    @property
    def key(self) -> bytes:
        return self.message.key

    @property
    def value(self) -> bytes | None:
        return self.message.value


@dataclass(frozen=True)
class TableChanges:
    """What one batch changed in one partition of one table (``None``: deleted)."""

    table: Any  # a faust Table: its ``changelog_topic`` and its store, ``data``
    partition: int
    changes: list[tuple[bytes, bytes | None]]


def _same(x: Any) -> Any:
    return x


async def write(
    publish: Callable[[list[Record]], Awaitable[Acknowledged]],
    batch: Sequence[TableChanges],
) -> int:
    """Publish ``batch``'s changelog records, then (acknowledged) apply them to the stores.
    Answers the number of records written. Raises whatever ``publish`` raises, with every
    store untouched."""
    records = [
        Record(c.table.changelog_topic.get_topic_name(), value, key, c.partition)
        for c in batch
        for key, value in c.changes
    ]
    if not records:
        return 0
    acknowledged = await publish(records)
    for c in batch:
        if not c.changes:
            continue
        topic = c.table.changelog_topic.get_topic_name()
        # every change of the batch is at or below this offset: the store holds the
        # changelog up to it (what recovery resumes after)
        offset = acknowledged[(topic, c.partition)]
        c.table.data.apply_changelog_batch(
            [Change(Message(topic, c.partition, offset, k, v)) for k, v in c.changes],
            to_key=_same,
            to_value=_same,
        )
    return len(records)
