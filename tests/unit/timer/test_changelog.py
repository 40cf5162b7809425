"""The timer's table writes: changelog records acknowledged first, then the stores written the
way faust's recovery writes them (a real faust in-memory store stands in for RocksDB)."""

from __future__ import annotations

from typing import Any

import pytest
from faust.stores.memory import Store

from kairos.kafka.producer import Acknowledged, PublishFailed, Record
from services.timer import changelog
from services.timer.changelog import TableChanges


class Topic:
    def __init__(self, name: str) -> None:
        self.name = name

    def get_topic_name(self) -> str:
        return self.name


class Table:
    """A faust table as the writer meets one: a changelog topic and a store."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.changelog_topic = Topic(f"{name}-changelog")
        self.data = Store("memory://", app=None, table=self)  # type: ignore[arg-type]
        self.applied_with: list[int] = []
        apply = self.data.apply_changelog_batch

        def recording(batch: Any, to_key: Any, to_value: Any) -> None:
            batch = list(batch)
            self.applied_with.extend(e.message.offset for e in batch)
            apply(batch, to_key, to_value)

        self.data.apply_changelog_batch = recording  # type: ignore[method-assign]


class Broker:
    """Appends published records to per-partition logs, or refuses them all."""

    def __init__(self) -> None:
        self.logs: dict[tuple[str, int], list[tuple[bytes | None, bytes | None]]] = {}
        self.down = False
        #: the stores' contents at each publish (nothing may be written before)
        self.seen: list[dict[bytes, bytes]] = []

    async def publish(self, records: list[Record]) -> Acknowledged:
        if self.down:
            raise PublishFailed("the broker is down")
        acknowledged: Acknowledged = {}
        for r in records:
            assert r.partition is not None
            log = self.logs.setdefault((r.topic, r.partition), [])
            log.append((r.key, r.value))
            acknowledged[(r.topic, r.partition)] = len(log) - 1
        return acknowledged


async def test_the_changelog_is_acknowledged_before_the_store_is_written() -> None:
    pending, index = Table("pending"), Table("index")
    pending.data.data[b"old"] = b"x"
    broker = Broker()

    async def publish(records: list[Record]) -> Acknowledged:
        broker.seen.append(dict(pending.data.data))
        return await broker.publish(records)

    written = await changelog.write(
        publish,
        [
            [
                TableChanges(pending, 1, [(b"m1", b"entry"), (b"old", None)]),
                TableChanges(index, 1, [(b"p1:100", b"[0,[]]")]),
                TableChanges(index, 2, []),
            ]
        ],
    )
    assert written == 3
    assert broker.seen == [{b"old": b"x"}], "the store was written before the changelog"
    assert broker.logs == {
        ("pending-changelog", 1): [(b"m1", b"entry"), (b"old", None)],
        ("index-changelog", 1): [(b"p1:100", b"[0,[]]")],
    }
    assert dict(pending.data.data) == {b"m1": b"entry"}
    assert dict(index.data.data) == {b"p1:100": b"[0,[]]"}
    # the store is told the last changelog offset it holds (what recovery resumes after)
    assert pending.applied_with == [1, 1] and index.applied_with == [0]


async def test_a_refused_changelog_leaves_every_store_untouched() -> None:
    pending = Table("pending")
    broker = Broker()
    broker.down = True
    with pytest.raises(PublishFailed):
        await changelog.write(broker.publish, [[TableChanges(pending, 0, [(b"m1", b"entry")])]])
    assert dict(pending.data.data) == {} and pending.applied_with == []


async def test_a_phase_is_acknowledged_and_applied_before_the_next_is_sent() -> None:
    """The timer's index goes before its pending entries: a crash between the two may leave a
    slot without its entry, never an entry without its slot."""
    index, pending = Table("index"), Table("pending")
    broker = Broker()
    sent: list[list[str]] = []

    async def publish(records: list[Record]) -> Acknowledged:
        sent.append([r.topic for r in records])
        if len(sent) == 2:
            assert dict(index.data.data) == {b"p0:7": b"[0,[]]"}, "index not applied first"
            raise PublishFailed("the process died here")
        return await broker.publish(records)

    with pytest.raises(PublishFailed):
        await changelog.write(
            publish,
            [
                [TableChanges(index, 0, [(b"p0:7", b"[0,[]]")])],
                [TableChanges(pending, 0, [(b"m", b"e")])],
            ],
        )
    assert sent == [["index-changelog"], ["pending-changelog"]]
    assert dict(pending.data.data) == {}


async def test_a_store_no_longer_this_worker_s_is_not_written() -> None:
    mine, theirs = Table("index"), Table("index")
    broker = Broker()
    await changelog.write(
        broker.publish,
        [[TableChanges(mine, 0, [(b"a", b"1")]), TableChanges(theirs, 1, [(b"b", b"2")])]],
        still_mine=lambda partition: partition == 0,
    )
    # both are in the changelog: the new owner recovers partition 1 from it
    assert set(broker.logs) == {("index-changelog", 0), ("index-changelog", 1)}
    assert dict(mine.data.data) == {b"a": b"1"} and dict(theirs.data.data) == {}


async def test_nothing_changed_publishes_nothing() -> None:
    broker = Broker()
    assert await changelog.write(broker.publish, [[TableChanges(Table("t"), 0, [])]]) == 0
    assert broker.logs == {}
