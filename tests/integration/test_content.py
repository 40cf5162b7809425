"""The claim check against a real broker: message texts read back from the schedule stream by
(partition, offset), near ones in one run, far ones sought to, every partition at once, calls
made together served by one read, and a text that retention removed answered missing."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from datetime import UTC, datetime

import pytest
from aiokafka.admin import NewTopic, RecordsToDelete
from aiokafka.structs import TopicPartition

from kairos.kafka.clients import make_admin, make_producer
from schemas.codec import encode
from schemas.events import MessageContent, Scheduled, Tick
from services.sender.content import ContentReader, ContentUnavailable, runs

pytestmark = pytest.mark.kafka

PARTITIONS = 3


def scheduled(n: int) -> Scheduled:
    now = datetime.now(UTC)
    return Scheduled(
        occurred_at=now,
        account_id="acc",
        message_id=f"m{n}",
        due_at=2_000_000_000,
        submitted_at=now,
        source="http",
        content=MessageContent(
            mail_from="a@x.test",
            rcpt_to=["b@y.test"],
            from_domain="x.test",
            mime=f"Subject: {n}\r\n\r\nbody {n}",
            size=20,
        ),
    )


async def test_texts_are_read_by_reference(bootstrap: str, prefix: str) -> None:
    topic = f"{prefix}schedule"
    admin = make_admin(bootstrap)
    await admin.start()
    producer = make_producer(bootstrap)
    await producer.start()
    refs: dict[tuple[int, int], int] = {}

    def owners(rs: Iterable[tuple[int, int]]) -> dict[tuple[int, int], tuple[str, int]]:
        return {r: (f"m{refs[r]}", 1) for r in rs}

    try:
        await admin.create_topics([NewTopic(topic, PARTITIONS, 1)])
        # per partition: a message, 500 ticks, a message, a tick, a message
        n = 0
        for p in range(PARTITIONS):
            for filler in (500, 1, 0):
                md = await producer.send_and_wait(topic, encode(scheduled(n)), partition=p)
                refs[(p, md.offset)] = n
                n += 1
                for _ in range(filler):
                    await producer.send(topic, encode(Tick(partition=p, now=1.0)), partition=p)
        await producer.flush()
        reader = ContentReader(bootstrap, topic)
        await reader.start()
        try:
            found = await reader.fetch(owners(refs))
            assert {ref: c.mime if c else None for ref, c in found.items()} == {
                ref: f"Subject: {n}\r\n\r\nbody {n}" for ref, n in refs.items()
            }
            # calls made together share one read
            (p0, o0), (p1, o1) = (
                (0, min(o for p, o in refs if p == 0)),
                (1, max(o for p, o in refs if p == 1)),
            )
            reads, asked = reader.reads, reader.bounds_asked
            a, b = await asyncio.gather(
                reader.fetch(owners([(p0, o0)])), reader.fetch(owners([(p1, o1)]))
            )
            assert a[(p0, o0)] is not None and b[(p1, o1)] is not None
            assert set(a) == {(p0, o0)} and set(b) == {(p1, o1)}
            assert reader.reads - reads <= 2  # one read; a second fetch only if split
            assert reader.bounds_asked == asked  # offsets inside the bounds known
            # a reference to a record that is not a scheduled event, to another message's or
            # another attempt's, or past the end: no text
            tick, end = (0, o0 + 1), (0, 10_000)
            other = next(r for r in refs if r[0] == 0 and r != (p0, o0))
            got = await reader.fetch(
                {tick: ("m0", 1), other: ("m0", 1), (p0, o0): ("m0", 2), end: ("m0", 1)}
            )
            assert got == {tick: None, other: None, (p0, o0): None, end: None}
            # retention removed the first message of partition 2: missing, the others read
            first2 = min(o for p, o in refs if p == 2)
            await admin.delete_records(
                {TopicPartition(topic, 2): RecordsToDelete(first2 + 1)}, timeout_ms=10_000
            )
            rest = [r for r in refs if r[0] == 2]
            asked = reader.bounds_asked
            got = await reader.fetch(owners(rest))
            assert reader.bounds_asked == asked + 1  # out of range: asked again
            assert got[(2, first2)] is None
            assert all(got[r] is not None for r in rest if r != (2, first2))
        finally:
            await reader.stop()
    finally:
        await producer.stop()
        await admin.delete_topics([topic])
        await admin.close()


def test_offsets_close_together_are_one_run() -> None:
    assert runs([5, 1, 3, 900, 1000, 5000], gap=200) == [(1, 5), (900, 1000), (5000, 5000)]
    assert runs([], gap=10) == []
    assert runs([7, 7], gap=0) == [(7, 7)]


async def test_a_read_that_breaks_answers_every_caller() -> None:
    reader = ContentReader("127.0.0.1:1", "nowhere")

    async def broken(wanted: object) -> object:
        raise ValueError("not a decodable record")

    reader._read = broken  # type: ignore[method-assign,assignment]
    calls = [reader.fetch({(0, 1): ("m", 1)}), reader.fetch({(1, 1): ("n", 1)})]
    results = await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), 5)
    assert all(isinstance(r, ContentUnavailable) for r in results)
    await reader.stop()
