"""The lifecycle projection: each message's status and timeline, built from the event log.

Every ingest replica follows the schedule stream (submissions, lifecycle commands, batch
commands), the due stream and the outcomes stream, all partitions, without a consumer group,
and folds them into a SQLite database of its own. The offsets it has applied are stored in the
same transaction as their effects, so a restarted replica resumes exactly where it stopped; a
replica without a database rebuilds it from the topics (the schedule stream is kept longer than
the scheduling horizon for that reason).

The three topics are read independently, so an outcome can be applied before the event that
led to it. The fold is order-tolerant: a status carries a rank within an attempt (pending <
due < settled), and an event changes the status only if it is of a later attempt, or of the same
attempt and a rank not below the current one. Pause, resume and reschedule change only a
pending message, as they do in the timer.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import re
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from prometheus_client.core import GaugeMetricFamily, Metric

from kairos.clock import Clock, SystemClock
from kairos.kafka.follow import Batch, LogFollower
from kairos.logging import get_logger
from kairos.settings import KairosSettings

log = get_logger("kairos.lifecycle")

#: Statuses a message can have. The first three are "pending": the timer still holds it.
STATUSES = ("scheduled", "paused", "deferred", "due", "delivered", "failed", "cancelled")
PENDING = ("scheduled", "paused", "deferred")
_RANK = {
    "scheduled": 0,
    "paused": 0,
    "deferred": 0,
    "due": 1,
    "delivered": 2,
    "failed": 2,
    "cancelled": 2,
}
LOGICAL_TOPICS = ("schedule", "due", "outcomes")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    message_id   TEXT PRIMARY KEY,
    account_id   TEXT NOT NULL,
    batch_id     TEXT,
    status       TEXT NOT NULL,
    attempt      INTEGER NOT NULL,
    due_at       INTEGER,
    partition    INTEGER,
    paused       INTEGER NOT NULL DEFAULT 0,
    batch_paused INTEGER NOT NULL DEFAULT 0,
    submitted_at TEXT,
    source       TEXT,
    recipients   TEXT,
    subject      TEXT,
    updated_at   TEXT
);
CREATE INDEX IF NOT EXISTS messages_by_due ON messages (account_id, due_at, message_id);
CREATE INDEX IF NOT EXISTS messages_by_batch ON messages (account_id, batch_id);
CREATE INDEX IF NOT EXISTS messages_by_status ON messages (status, due_at);
CREATE TABLE IF NOT EXISTS timeline (
    message_id TEXT NOT NULL,
    seq        INTEGER NOT NULL,
    at         TEXT NOT NULL,
    type       TEXT NOT NULL,
    attempt    INTEGER,
    detail     TEXT NOT NULL,
    PRIMARY KEY (message_id, seq)
);
CREATE TABLE IF NOT EXISTS batches (
    account_id TEXT NOT NULL,
    batch_id   TEXT NOT NULL,
    partition  INTEGER NOT NULL,
    action     TEXT NOT NULL,
    PRIMARY KEY (account_id, batch_id, partition)
);
CREATE TABLE IF NOT EXISTS offsets (
    topic     TEXT NOT NULL,
    partition INTEGER NOT NULL,
    next      INTEGER NOT NULL,
    PRIMARY KEY (topic, partition)
);
"""

#: Fields of an event kept in its timeline entry (never the message content).
_DETAIL = (
    "due_at",
    "batch_id",
    "source",
    "lateness_ms",
    "smtp_code",
    "smtp_text",
    "enhanced_status",
    "text",
    "retry_at",
    "stage",
    "reason",
    "scope",
    "command",
    "action",
    "refused",
)


@dataclass(frozen=True)
class Record:
    """One record of a followed topic: logical topic name, partition, offset, value."""

    topic: str
    partition: int
    offset: int
    value: bytes | None


_SUBJECT = re.compile(rb"^subject:[ \t]*(.*(?:\r?\n[ \t].*)*)", re.IGNORECASE | re.MULTILINE)


def _subject(content: dict[str, Any]) -> str | None:
    """The Subject header of a message's content (for listings), decoded."""
    mime = content.get("mime", "")
    if content.get("mime_encoding") == "base64":
        head = base64.b64decode(str(mime)[:24000])
    else:
        head = str(mime)[:16384].encode("utf-8", "replace")
    end = head.find(b"\r\n\r\n")
    match = _SUBJECT.search(head if end < 0 else head[: end + 2])
    if match is None:
        return None
    value = re.sub(rb"\r?\n[ \t]", b" ", match.group(1)).strip().decode("utf-8", "replace")
    if "=?" in value:
        from email.header import decode_header, make_header

        with contextlib.suppress(Exception):
            return str(make_header(decode_header(value)))
    return value


class LifecycleStore:
    """The projection's state (pure with respect to Kafka: ``apply`` records, query)."""

    def __init__(self, path: Path | str) -> None:
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.path = str(path)
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- folding events ------------------------------------------------------------------

    def offsets(self) -> dict[tuple[str, int], int]:
        """The next offset to read of every (logical topic, partition) applied so far."""
        with self._lock:
            rows = self._db.execute("SELECT topic, partition, next FROM offsets").fetchall()
        return {(r["topic"], r["partition"]): r["next"] for r in rows}

    def apply(self, records: Sequence[Record]) -> int:
        """Fold ``records`` (in order per partition) and advance the stored offsets, in one
        transaction. Returns how many events changed something."""
        applied = 0
        ends: dict[tuple[str, int], int] = {}
        with self._lock:
            db = self._db
            db.execute("BEGIN")
            try:
                for r in records:
                    ends[(r.topic, r.partition)] = r.offset + 1
                    if r.value is None:
                        continue
                    try:
                        event = orjson.loads(r.value)
                    except orjson.JSONDecodeError:
                        log.error("undecodable record skipped", topic=r.topic, offset=r.offset)
                        continue
                    if isinstance(event, dict) and self._fold(db, r, event):
                        applied += 1
                db.executemany(
                    "INSERT INTO offsets (topic, partition, next) VALUES (?, ?, ?) "
                    "ON CONFLICT (topic, partition) DO UPDATE SET next = excluded.next",
                    [(t, p, n) for (t, p), n in ends.items()],
                )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return applied

    def pending_by_hour(self, now: float, hours: int = 24) -> list[int]:
        """How many pending messages fall due in each of the next ``hours`` hours (index 0:
        before ``now`` + 1 h, overdue ones included)."""
        counts = [0] * hours
        marks = ",".join("?" * len(PENDING))
        with self._lock:
            rows = self._db.execute(
                f"SELECT CAST((MAX(due_at, ?) - ?) / 3600 AS INTEGER) AS h, COUNT(*) AS n "
                f"FROM messages WHERE status IN ({marks}) AND due_at < ? GROUP BY h",
                (int(now), int(now), *PENDING, int(now) + hours * 3600),
            ).fetchall()
        for row in rows:
            counts[min(max(row["h"], 0), hours - 1)] += row["n"]
        return counts

    def prune(self, now: float, retention: float) -> int:
        """Forget settled messages whose last event is more than ``retention`` seconds before
        ``now``, with their timelines. Returns how many."""
        cutoff = datetime.fromtimestamp(now - retention, UTC).isoformat()
        settled = tuple(s for s in STATUSES if _RANK[s] == 2)
        marks = ",".join("?" * len(settled))
        with self._lock:
            db = self._db
            db.execute("BEGIN")
            try:
                db.execute("CREATE TEMP TABLE IF NOT EXISTS pruned (message_id TEXT PRIMARY KEY)")
                db.execute("DELETE FROM pruned")
                db.execute(
                    f"INSERT INTO pruned SELECT message_id FROM messages WHERE status IN "
                    f"({marks}) AND julianday(updated_at) < julianday(?)",
                    (*settled, cutoff),
                )
                db.execute("DELETE FROM timeline WHERE message_id IN (SELECT * FROM pruned)")
                gone = db.execute(
                    "DELETE FROM messages WHERE message_id IN (SELECT * FROM pruned)"
                ).rowcount
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return gone

    def _fold(self, db: sqlite3.Connection, r: Record, ev: dict[str, Any]) -> bool:
        kind = ev.get("type")
        if kind == "tick":
            return False
        if kind == "batch":
            return self._batch(db, ev)
        mid = ev.get("message_id")
        if not isinstance(mid, str):
            return False
        at = str(ev.get("occurred_at", ""))
        row = db.execute("SELECT * FROM messages WHERE message_id = ?", (mid,)).fetchone()
        if row is not None and row["account_id"] != ev.get("account_id"):
            log.warning("event of another account for a message id skipped", message_id=mid)
            return False
        attempt = int(ev.get("attempt") or (row["attempt"] if row is not None else 1))
        self._timeline(db, mid, at, str(kind), attempt, ev)
        if kind == "scheduled":
            return self._scheduled(db, row, r, ev, attempt, at)
        if kind in ("pause", "resume", "reschedule"):
            return self._command(db, row, str(kind), ev, at)
        if kind in ("cancel", "rejected"):
            return True  # recorded in the timeline; the outcome (or its absence) decides
        if kind == "due":
            return self._status(db, row, ev, "due", attempt, at, due_at=ev.get("due_at"))
        if kind == "deferred":
            return self._status(db, row, ev, "deferred", attempt, at, due_at=ev.get("retry_at"))
        if kind in ("delivered", "failed", "cancelled"):
            return self._status(db, row, ev, str(kind), attempt, at)
        return False

    def _timeline(
        self, db: sqlite3.Connection, mid: str, at: str, kind: str, attempt: int, ev: dict[str, Any]
    ) -> None:
        detail = {k: ev[k] for k in _DETAIL if ev.get(k) not in (None, [], "")}
        db.execute(
            "INSERT INTO timeline (message_id, seq, at, type, attempt, detail) VALUES "
            "(?, (SELECT COALESCE(MAX(seq), 0) + 1 FROM timeline WHERE message_id = ?), "
            "?, ?, ?, ?)",
            (mid, mid, at, kind, attempt, orjson.dumps(detail).decode()),
        )

    def _batch_paused(self, db: sqlite3.Connection, account: str, batch: str, part: int) -> bool:
        row = db.execute(
            "SELECT action FROM batches WHERE account_id = ? AND batch_id = ? AND partition = ?",
            (account, batch, part),
        ).fetchone()
        return row is not None and row["action"] == "pause"

    def _scheduled(
        self,
        db: sqlite3.Connection,
        row: sqlite3.Row | None,
        r: Record,
        ev: dict[str, Any],
        attempt: int,
        at: str,
    ) -> bool:
        content = ev.get("content") or {}
        account, batch = str(ev.get("account_id")), ev.get("batch_id")
        retry = ev.get("source") == "retry"
        batch_paused = batch is not None and self._batch_paused(db, account, batch, r.partition)
        meta = (
            batch,
            ev.get("due_at"),
            r.partition,
            ev.get("submitted_at"),
            orjson.dumps(content.get("rcpt_to", [])).decode(),
        )
        if row is None:
            status = "deferred" if retry else ("paused" if batch_paused else "scheduled")
            db.execute(
                "INSERT INTO messages (message_id, account_id, batch_id, due_at, partition, "
                "submitted_at, recipients, status, attempt, batch_paused, source, subject, "
                "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    ev["message_id"],
                    account,
                    *meta,
                    status,
                    attempt,
                    int(batch_paused),
                    ev.get("source"),
                    _subject(content),
                    at,
                ),
            )
            return True
        if attempt > row["attempt"]:  # a retry: pending again, as a deferred attempt
            db.execute(
                "UPDATE messages SET status = 'deferred', attempt = ?, due_at = ?, paused = 0, "
                "partition = ?, updated_at = ? WHERE message_id = ?",
                (attempt, ev.get("due_at"), r.partition, at, ev["message_id"]),
            )
            return True
        # the same attempt seen after its outcome (topics are read independently): fill in
        # what only the submission carries, keep the later status
        db.execute(
            "UPDATE messages SET batch_id = COALESCE(batch_id, ?), due_at = COALESCE(due_at, ?), "
            "partition = COALESCE(partition, ?), submitted_at = COALESCE(submitted_at, ?), "
            "recipients = COALESCE(recipients, ?), source = COALESCE(source, ?), "
            "subject = COALESCE(subject, ?) WHERE message_id = ?",
            (*meta, ev.get("source"), _subject(content), ev["message_id"]),
        )
        return True

    def _command(
        self,
        db: sqlite3.Connection,
        row: sqlite3.Row | None,
        kind: str,
        ev: dict[str, Any],
        at: str,
    ) -> bool:
        if row is None or _RANK[row["status"]] != 0:
            return True  # the timer rejects it; its rejection lands on the timeline
        paused, due = row["paused"], row["due_at"]
        if kind == "pause":
            paused = 1
        elif kind == "resume":
            paused = 0
        else:
            due = ev.get("due_at", due)
        self._set_pending(
            db, row["message_id"], row["status"], paused, row["batch_paused"], due, at
        )
        return True

    def _set_pending(
        self,
        db: sqlite3.Connection,
        mid: str,
        current: str,
        paused: int,
        batch_paused: int,
        due: Any,
        at: str,
    ) -> None:
        if current == "deferred" and not (paused or batch_paused):
            status = "deferred"
        else:
            status = "paused" if paused or batch_paused else "scheduled"
        db.execute(
            "UPDATE messages SET status = ?, paused = ?, batch_paused = ?, due_at = ?, "
            "updated_at = ? WHERE message_id = ?",
            (status, paused, batch_paused, due, at, mid),
        )

    def _status(
        self,
        db: sqlite3.Connection,
        row: sqlite3.Row | None,
        ev: dict[str, Any],
        status: str,
        attempt: int,
        at: str,
        due_at: Any = None,
    ) -> bool:
        mid = str(ev["message_id"])
        if row is None:
            db.execute(
                "INSERT INTO messages (message_id, account_id, batch_id, status, attempt, "
                "due_at, recipients, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    mid,
                    ev.get("account_id"),
                    ev.get("batch_id"),
                    status,
                    attempt,
                    due_at if due_at is not None else ev.get("due_at"),
                    orjson.dumps(ev.get("recipients") or []).decode(),
                    at,
                ),
            )
            return True
        later = attempt > row["attempt"] or (
            attempt == row["attempt"] and _RANK[status] >= _RANK[row["status"]]
        )
        if not later:
            return False
        db.execute(
            "UPDATE messages SET status = ?, attempt = ?, due_at = COALESCE(?, due_at), "
            "updated_at = ? WHERE message_id = ?",
            (status, attempt, due_at, at, mid),
        )
        return True

    def _batch(self, db: sqlite3.Connection, ev: dict[str, Any]) -> bool:
        account, batch, action = ev.get("account_id"), ev.get("batch_id"), ev.get("action")
        part, at = int(ev.get("partition", 0)), str(ev.get("occurred_at", ""))
        db.execute(
            "INSERT INTO batches (account_id, batch_id, partition, action) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (account_id, batch_id, partition) DO UPDATE SET action = excluded.action",
            (account, batch, part, action),
        )
        members = db.execute(
            "SELECT * FROM messages WHERE account_id = ? AND batch_id = ? AND partition = ?",
            (account, batch, part),
        ).fetchall()
        for row in members:
            self._timeline(db, row["message_id"], at, f"batch_{action}", row["attempt"], ev)
            if _RANK[row["status"]] != 0 or action == "cancel":
                continue  # a cancel settles through the timer's cancelled outcomes
            batch_paused = 1 if action == "pause" else 0
            self._set_pending(
                db, row["message_id"], row["status"], row["paused"], batch_paused, row["due_at"], at
            )
        return True

    # -- queries ---------------------------------------------------------------------------

    def get(self, account_id: str, message_id: str) -> dict[str, Any] | None:
        """A message of this account with its timeline, or None (unknown, or another's)."""
        with self._lock:
            row = self._db.execute(
                "SELECT * FROM messages WHERE message_id = ? AND account_id = ?",
                (message_id, account_id),
            ).fetchone()
            if row is None:
                return None
            # in the order the events happened: the topics are read independently, so a due
            # event can be applied before the resume that led to it
            events = self._db.execute(
                "SELECT * FROM timeline WHERE message_id = ? ORDER BY julianday(at), seq",
                (message_id,),
            ).fetchall()
        out = _summary(row)
        out["timeline"] = [
            {"type": e["type"], "at": e["at"], "attempt": e["attempt"], **orjson.loads(e["detail"])}
            for e in events
        ]
        return out

    def list(
        self,
        account_id: str,
        statuses: Iterable[str] = PENDING,
        batch_id: str | None = None,
        due_from: int | None = None,
        due_to: int | None = None,
        limit: int = 50,
        after: tuple[int, str] | None = None,
        before: tuple[int, str] | None = None,
    ) -> list[dict[str, Any]]:
        """Messages of this account ordered by (due second, id), after the cursor ``after``;
        with ``before``, the ``limit`` messages just before that cursor (in the same order)."""
        where = ["account_id = ?"]
        args: list[Any] = [account_id]
        wanted = list(statuses)
        where.append(f"status IN ({', '.join('?' * len(wanted))})")
        args += wanted
        if batch_id is not None:
            where.append("batch_id = ?")
            args.append(batch_id)
        if due_from is not None:
            where.append("due_at >= ?")
            args.append(due_from)
        if due_to is not None:
            where.append("due_at <= ?")
            args.append(due_to)
        if after is not None:
            where.append("(due_at > ? OR (due_at = ? AND message_id > ?))")
            args += [after[0], after[0], after[1]]
        order = "due_at, message_id"
        if before is not None:
            where.append("(due_at < ? OR (due_at = ? AND message_id < ?))")
            args += [before[0], before[0], before[1]]
            order = "due_at DESC, message_id DESC"
        sql = f"SELECT * FROM messages WHERE {' AND '.join(where)} ORDER BY {order} LIMIT ?"
        with self._lock:
            rows = self._db.execute(sql, (*args, limit)).fetchall()
        if before is not None:
            rows.reverse()
        return [_summary(r) for r in rows]

    def batch_members(self, account_id: str, batch_id: str) -> Iterator[dict[str, Any]]:
        """Every message of a batch (any status)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM messages WHERE account_id = ? AND batch_id = ? "
                "ORDER BY due_at, message_id",
                (account_id, batch_id),
            ).fetchall()
        return (_summary(r) for r in rows)


def _summary(row: sqlite3.Row) -> dict[str, Any]:
    return {
        "id": row["message_id"],
        "status": row["status"],
        "scheduled_at": row["due_at"],
        "attempt": row["attempt"],
        "batch_id": row["batch_id"],
        "subject": row["subject"],
        "to": orjson.loads(row["recipients"]) if row["recipients"] else [],
        "submitted_at": row["submitted_at"],
        "updated_at": row["updated_at"],
    }


def encode_cursor(due_at: int, message_id: str) -> str:
    return base64.urlsafe_b64encode(orjson.dumps([due_at, message_id])).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[int, str]:
    """The (due second, id) a cursor names; ValueError when it is not one of ours."""
    try:
        due, mid = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        return int(due), str(mid)
    except Exception as exc:
        raise ValueError("not a cursor of this API") from exc


class LifecycleProjection(LogFollower):
    """A :class:`LifecycleStore` fed from Kafka in the background."""

    #: At most this long between two prunings of settled messages past their retention.
    PRUNE_EVERY = 3600.0

    def __init__(
        self,
        settings: KairosSettings,
        bootstrap: str,
        path: Path | str,
        clock: Clock | None = None,
    ) -> None:
        super().__init__(
            bootstrap, {settings.topic(t): t for t in LOGICAL_TOPICS}, max_poll_records=2000
        )
        self.store = LifecycleStore(path)
        self.clock = clock or SystemClock()
        self.retention = settings.lifecycle_retention
        #: how often settled messages past their retention are pruned
        self.prune_every = min(self.PRUNE_EVERY, self.retention / 2)
        self._pruned_at = 0.0

    def start_offsets(self) -> dict[tuple[str, int], int]:
        return self.store.offsets()

    async def handle(self, batch: Batch) -> None:
        records = [
            Record(self.logical(tp), tp.partition, r.offset, r.value)
            for tp, rs in batch.items()
            for r in rs
        ]
        await asyncio.to_thread(self.store.apply, records)
        now = self.clock.now()
        if now - self._pruned_at >= self.prune_every:
            self._pruned_at = now
            gone = await asyncio.to_thread(self.store.prune, now, self.retention)
            if gone:
                log.info("settled messages pruned", count=gone, retention_s=self.retention)

    def collect(self) -> Iterator[Metric]:
        """``kairos_pending_messages{due_in_hours}``, read from the store at each scrape."""
        family = GaugeMetricFamily(
            "kairos_pending_messages",
            "Pending messages falling due in each of the next 24 hours",
            labels=["due_in_hours"],
        )
        for hour, n in enumerate(self.store.pending_by_hour(self.clock.now())):
            family.add_metric([str(hour)], n)
        yield family

    async def sync(self, limit: float = 2.0) -> bool:
        """Wait until everything in the followed topics now has been applied (read your
        writes: call after publishing a command or before answering "not found")."""
        ends = await self.end_offsets(limit)
        if ends is None:
            return False

        def done(_: object = None) -> bool:
            return self.reached(ends)

        return done() or await self.wait_until(done, limit)

    async def stop(self) -> None:
        await super().stop()
        self.store.close()
