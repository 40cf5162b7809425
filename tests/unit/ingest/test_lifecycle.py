"""The lifecycle projection's fold (pure: SQLite in memory, no broker)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from services.ingest.lifecycle import LifecycleStore, Record, decode_cursor, encode_cursor

A, B = "acct-a", "acct-b"


class Log:
    """Feeds a store one event at a time, with per-topic offsets."""

    def __init__(self) -> None:
        self.store = LifecycleStore(":memory:")
        self.offsets: dict[tuple[str, int], int] = {}

    def feed(self, topic: str, event: dict[str, Any], partition: int = 0) -> None:
        offset = self.offsets.get((topic, partition), 0)
        self.offsets[(topic, partition)] = offset + 1
        self.store.apply([Record(topic, partition, offset, orjson.dumps(event))])

    def scheduled(self, mid: str, due: int, account: str = A, **extra: Any) -> None:
        self.feed(
            "schedule",
            {
                "type": "scheduled",
                "occurred_at": "2026-11-24T00:00:00Z",
                "account_id": account,
                "message_id": mid,
                "due_at": due,
                "submitted_at": "2026-11-24T00:00:00Z",
                "source": extra.pop("source", "http"),
                "attempt": extra.pop("attempt", 1),
                "content": {
                    "mail_from": "a@example.com",
                    "rcpt_to": ["u@example.org"],
                    "from_domain": "example.com",
                    "mime": f"Subject: hello {mid}\r\n\r\nbody",
                    "size": 10,
                },
                **extra,
            },
        )

    def event(self, topic: str, kind: str, mid: str, account: str = A, **extra: Any) -> None:
        self.feed(
            topic,
            {
                "type": kind,
                "occurred_at": "2026-11-24T00:00:01Z",
                "account_id": account,
                "message_id": mid,
                **extra,
            },
        )

    def status(self, mid: str, account: str = A) -> str | None:
        got = self.store.get(account, mid)
        return None if got is None else str(got["status"])


def test_a_message_goes_from_scheduled_to_delivered_with_its_timeline() -> None:
    log = Log()
    log.scheduled("m1", 100)
    assert log.status("m1") == "scheduled"
    log.event("due", "due", "m1", attempt=1, due_at=100, lateness_ms=12)
    assert log.status("m1") == "due"
    log.event("outcomes", "delivered", "m1", attempt=1, due_at=100, smtp_code=250)
    got = log.store.get(A, "m1")
    assert got is not None
    assert got["status"] == "delivered" and got["subject"] == "hello m1"
    assert [e["type"] for e in got["timeline"]] == ["scheduled", "due", "delivered"]
    assert got["timeline"][1]["lateness_ms"] == 12
    assert "mime" not in orjson.dumps(got).decode()


def test_another_account_sees_nothing() -> None:
    log = Log()
    log.scheduled("m1", 100)
    assert log.store.get(B, "m1") is None
    assert log.store.list(B) == []
    log.event("outcomes", "cancelled", "m1", account=B, attempt=1, due_at=100, scope="message")
    assert log.status("m1") == "scheduled"  # an event naming another account changes nothing


def test_an_outcome_read_before_its_submission_keeps_the_later_status() -> None:
    log = Log()
    log.event("outcomes", "delivered", "m1", attempt=1, due_at=100)
    log.event("due", "due", "m1", attempt=1, due_at=100)
    log.scheduled("m1", 100, batch_id="b1")
    got = log.store.get(A, "m1")
    assert got is not None
    assert got["status"] == "delivered" and got["batch_id"] == "b1"


def test_pause_resume_reschedule_change_only_a_pending_message() -> None:
    log = Log()
    log.scheduled("m1", 100)
    log.event("schedule", "pause", "m1")
    assert log.status("m1") == "paused"
    log.event("schedule", "reschedule", "m1", due_at=200)
    log.event("schedule", "resume", "m1")
    got = log.store.get(A, "m1")
    assert got is not None and (got["status"], got["scheduled_at"]) == ("scheduled", 200)
    log.event("due", "due", "m1", attempt=1, due_at=200)
    log.event("schedule", "pause", "m1")
    log.event("outcomes", "rejected", "m1", command="pause", reason="not_pending")
    assert log.status("m1") == "due"


def test_a_retry_is_deferred_until_its_attempt_is_due() -> None:
    log = Log()
    log.scheduled("m1", 100)
    log.event("due", "due", "m1", attempt=1, due_at=100)
    log.scheduled("m1", 160, source="retry", attempt=2)
    log.event("outcomes", "deferred", "m1", attempt=1, due_at=100, retry_at=160, text="4.2.1")
    got = log.store.get(A, "m1")
    assert got is not None and (got["status"], got["attempt"]) == ("deferred", 2)
    log.event("due", "due", "m1", attempt=2, due_at=160)
    log.event("outcomes", "failed", "m1", attempt=2, due_at=160, stage="delivery", reason="x")
    assert log.status("m1") == "failed"


def test_batch_pause_applies_per_partition_and_to_later_members() -> None:
    log = Log()
    log.scheduled("m1", 100, batch_id="b")
    batch = {"type": "batch", "occurred_at": "x", "account_id": A, "batch_id": "b"}
    log.feed("schedule", {**batch, "action": "pause", "partition": 1}, partition=1)
    assert log.status("m1") == "scheduled"  # m1 lives on partition 0
    log.feed("schedule", {**batch, "action": "pause", "partition": 0})
    assert log.status("m1") == "paused"
    log.scheduled("m2", 100, batch_id="b")
    assert log.status("m2") == "paused"
    log.event("schedule", "pause", "m1")
    log.feed("schedule", {**batch, "action": "resume", "partition": 0})
    assert (log.status("m1"), log.status("m2")) == ("paused", "scheduled")


def test_list_is_ordered_by_due_second_and_pages_with_a_cursor() -> None:
    log = Log()
    for i in range(5):
        log.scheduled(f"m{i}", 100 + (4 - i))
    log.scheduled("other", 50, account=B)
    log.event("outcomes", "cancelled", "m0", attempt=1, due_at=104, scope="message")
    page = log.store.list(A, limit=2)
    assert [m["id"] for m in page] == ["m4", "m3"]
    cursor = decode_cursor(encode_cursor(page[-1]["scheduled_at"], page[-1]["id"]))
    rest = log.store.list(A, limit=10, after=cursor)
    assert [m["id"] for m in rest] == ["m2", "m1"]
    assert [m["id"] for m in log.store.list(A, ["cancelled"])] == ["m0"]
    assert [m["id"] for m in log.store.list(A, due_from=101, due_to=102)] == ["m3", "m2"]


def test_offsets_survive_a_reopen(tmp_path: Any) -> None:
    path = tmp_path / "p.sqlite3"
    store = LifecycleStore(path)
    store.apply([Record("due", 3, 41, None), Record("due", 3, 42, b"not json")])
    store.close()
    again = LifecycleStore(path)
    assert again.offsets() == {("due", 3): 43}


def test_a_bad_cursor_is_refused() -> None:
    with pytest.raises(ValueError):
        decode_cursor("bm90IGEgY3Vyc29y")


def test_the_subject_is_read_from_the_header_block_only() -> None:
    import base64

    from services.ingest.lifecycle import _subject

    folded = "From: a\r\nSubject: =?utf-8?q?h=C3=A9llo?=\r\n wrapped\r\n\r\nSubject: body"
    assert _subject({"mime": folded}) == "héllo wrapped"
    raw = base64.b64encode(b"Subject: b64\r\n\r\nx").decode()
    assert _subject({"mime": raw, "mime_encoding": "base64"}) == "b64"
    assert _subject({"mime": "X: y\r\n\r\nSubject: not a header"}) is None


def test_settled_messages_are_pruned_after_their_retention_and_pending_ones_never() -> None:
    """Bounded over months: a message delivered 31 days ago is forgotten with its timeline; one
    delivered 29 days ago and one still pending (however old) are kept."""
    log = Log()
    day = 86400.0
    now = datetime(2026, 12, 25, tzinfo=UTC).timestamp()

    def at(days_ago: float) -> str:
        return datetime.fromtimestamp(now - days_ago * day, UTC).isoformat()

    for mid, days_ago in (("old", 31), ("recent", 29)):
        log.scheduled(mid, 100)
        log.event("outcomes", "delivered", mid, attempt=1, due_at=100, occurred_at=at(days_ago))
    log.scheduled("pending", int(now + day), occurred_at=at(60))
    assert log.store.prune(now, retention=30 * day) == 1
    assert log.store.get(A, "old") is None
    assert log.status("recent") == "delivered" and log.status("pending") == "scheduled"
    rows = log.store._db.execute("SELECT DISTINCT message_id FROM timeline").fetchall()
    assert sorted(r["message_id"] for r in rows) == ["pending", "recent"]
    assert log.store.prune(now, retention=30 * day) == 0
    assert log.store.prune(now + 2 * day, retention=30 * day) == 1  # now "recent" is old


def test_pending_messages_by_the_hour_they_fall_due() -> None:
    """What is coming (the dashboard's panel): pending messages per hour for the next 24 h;
    overdue ones count in the first hour, settled and later ones not at all."""
    log = Log()
    now = 1_800_000_000
    dues = {"a": now - 5, "b": now + 10, "c": now + 3599, "d": now + 3600,
            "e": now + 23 * 3600 + 1, "f": now + 24 * 3600, "g": now + 20}  # fmt: skip
    for mid, due in dues.items():
        log.scheduled(mid, due)
    log.event("outcomes", "delivered", "g", attempt=1, due_at=now + 20)
    counts = log.store.pending_by_hour(now)
    assert len(counts) == 24
    assert counts[0] == 3 and counts[1] == 1 and counts[23] == 1 and sum(counts) == 5


def test_the_timeline_is_in_the_order_events_happened_not_the_order_they_were_read() -> None:
    """The due topic can be read before the schedule stream: a due event applied before the
    resume that led to it is still listed after it."""
    log = Log()
    log.scheduled("m1", 100)
    log.event("schedule", "pause", "m1", occurred_at="2026-11-24T00:00:01Z")
    log.event("due", "due", "m1", attempt=1, due_at=100, occurred_at="2026-11-24T00:00:03.5Z")
    log.event("schedule", "resume", "m1", occurred_at="2026-11-24T00:00:03Z")
    got = log.store.get(A, "m1")
    assert got is not None
    assert [e["type"] for e in got["timeline"]] == ["scheduled", "pause", "resume", "due"]
