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

The same holds between the timer's two tables, whose changelogs are different topics (a
crash can land one and not the other): the caller publishes in phases, each acknowledged before
the next is sent. The index goes first: a slot without its entry is skipped when walked, and the
batch read again adds the entry; an entry without its slot would be found by the batch read
again, taken for a repeat, and never fire.

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
    phases: Sequence[Sequence[TableChanges]],
    still_mine: Callable[[int], bool] = lambda partition: True,
) -> int:
    """Publish each phase's changelog records, and once they are acknowledged apply them to
    the stores, before the next phase is sent. Answers the number of records written. Raises
    whatever ``publish`` raises, with that phase's stores (and the later ones') untouched.

    A store is written only where its partition is still this worker's (``still_mine``):
    one revoked meanwhile is another's now, and a store behind its changelog is safe (recovery
    reads on from its persisted offset), one ahead of another owner's records is not."""
    written = 0
    for phase in phases:
        records = [
            Record(c.table.changelog_topic.get_topic_name(), value, key, c.partition)
            for c in phase
            for key, value in c.changes
        ]
        if not records:
            continue
        acknowledged = await publish(records)
        written += len(records)
        for c in phase:
            if not c.changes or not still_mine(c.partition):
                continue
            topic = c.table.changelog_topic.get_topic_name()
            # every change of the phase is at or below this offset: the store holds the
            # changelog up to it (what recovery resumes at); -1 (not known) only means more
            # to read again
            offset = acknowledged.get((topic, c.partition), -1)
            c.table.data.apply_changelog_batch(
                [Change(Message(topic, c.partition, offset, k, v)) for k, v in c.changes],
                to_key=_same,
                to_value=_same,
            )
    return written
