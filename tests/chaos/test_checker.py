"""The fault suite's checker on made-up evidence (no broker): it catches each kind of broken
promise, and passes a clean run. A checker that cannot fail proves nothing."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

from tests.chaos.harness import (
    WATCHED,
    Evidence,
    FaultLog,
    HealthMonitor,
    LoadGenerator,
    Submission,
    TrialConfig,
    analyse,
)
from tests.integration.conftest import Stack

NOW = float(int(time.time()))


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat()


class World:
    """Submissions, topic events and sink files, built up by a test."""

    def __init__(self, outbox: Path) -> None:
        self.outbox = outbox
        outbox.mkdir()
        self.load = LoadGenerator("http://unused", "key", TrialConfig())
        self.events: dict[str, list[dict[str, Any]]] = {
            "schedule": [],
            "due": [],
            "dispatch": [],
            "outcomes": [],
        }
        self.monitor = HealthMonitor(cast(Stack, None))
        for service in WATCHED:
            self.monitor.healthy[service] = True
            self.monitor.became_healthy[service] = time.monotonic()
        self.fault = FaultLog("test", ended=time.monotonic() - 5, ended_wall=NOW - 5)

    def submit(self, status: int, due: int, sent_at: float = NOW) -> Submission:
        sub = Submission(token=uuid.uuid4().hex, sent_at=sent_at, scheduled=True, status=status)
        if status in (201, 202):
            sub.message_id, sub.due_at = str(uuid.uuid4()), due
        self.load.submissions.append(sub)
        return sub

    def scheduled(self, sub: Submission, mid: str | None = None) -> str:
        mid = mid or sub.message_id or str(uuid.uuid4())
        mime = f"Subject: chaos {sub.token}\r\nMessage-ID: <{mid}@example.com>\r\n\r\nhi\r\n"
        due = sub.due_at or int(NOW)
        self.events["schedule"].append(
            {"type": "scheduled", "message_id": mid, "due_at": due, "content": {"mime": mime}}
        )
        return mid

    def due(self, mid: str, due: int, emitted: float) -> None:
        event = {"message_id": mid, "due_at": due, "attempt": 1, "emitted_at": iso(emitted)}
        self.events["due"].append(event)
        self.events["dispatch"].append(event)

    def outcome(self, mid: str, kind: str, due: int, at: float, **extra: Any) -> None:
        self.events["outcomes"].append(
            {"type": kind, "message_id": mid, "due_at": due, "delivered_at": iso(at), **extra}
        )

    def stored(self, mid: str, token: str, at: float) -> None:
        name = f"{at:.6f}-{uuid.uuid4().hex[:8]}.eml"
        (self.outbox / name).write_bytes(
            f"X-Kairos-Envelope-From: a@b\r\nSubject: chaos {token}\r\n"
            f"Message-ID: <{mid}@example.com>\r\nDate: x\r\n\r\nhi\r\n".encode()
        )

    def deliver(self, sub: Submission, at: float, copies: int = 1, outcome: bool = True) -> str:
        mid = self.scheduled(sub)
        due = sub.due_at or int(NOW)
        self.due(mid, due, max(at - 0.1, due))
        for _ in range(copies):
            self.stored(mid, sub.token, at)
        if outcome:
            self.outcome(mid, "delivered", due, at)
        return mid

    def report(self) -> Any:
        ev = Evidence({}, self.outbox)
        ev.add(self.events)
        ev.read_outbox()
        return analyse("test", self.load, ev, self.monitor, self.fault)


def test_a_clean_run_passes(tmp_path: Path) -> None:
    w = World(tmp_path / "outbox")
    for i in range(20):
        w.deliver(w.submit(202, int(NOW) + i), NOW + i + 0.2)
    refused = w.submit(503, int(NOW), sent_at=NOW - 10)  # during the fault
    late = w.scheduled(refused)  # written late, then withdrawn
    w.outcome(late, "cancelled", int(NOW), NOW, scope="withdrawn")
    rep = w.report()
    assert rep.failures == [], rep.table()
    assert (rep.accepted, rep.delivered, rep.refused_503, rep.written_late) == (20, 20, 1, 1)
    assert rep.withdrawn == 1 and rep.accepting_again is not None


def test_each_broken_promise_is_caught(tmp_path: Path) -> None:
    w = World(tmp_path / "outbox")
    due = int(NOW) + 10
    w.deliver(w.submit(202, due), due + 0.5)  # fine
    lost = w.submit(202, due)
    w.scheduled(lost)  # scheduled, never due
    early = w.submit(202, due)
    w.deliver(early, due - 0.5)
    twice = w.submit(202, due)
    w.deliver(twice, due + 1, copies=2)
    silent = w.submit(202, due)
    w.deliver(silent, due + 1, outcome=False)
    refused = w.submit(503, due)
    w.deliver(refused, due + 1)  # written late and delivered
    w.monitor.healthy["validator"] = False
    w.monitor.exits["validator"] = "exited 1 (pid 1)"
    rep = w.report()
    assert rep.lost == [lost.message_id]
    assert rep.stuck_at == {"scheduled, never due": 1}
    assert rep.early == [early.message_id]
    assert rep.duplicates == 1
    assert rep.no_outcome == [silent.message_id]
    assert len(rep.refused_delivered) == 1
    assert rep.time_to_healthy["validator"] is None
    # the last submission (sent after the fault) was refused: ingest is not accepting again
    assert rep.accepting_again is None
    text = "\n".join(rep.failures)
    for needle in (
        "lost",
        "without a terminal outcome",
        "before their second",
        "duplicate deliveries",
        "refused submissions delivered",
        "not healthy again",
        "processes exited",
        "still refusing",
    ):
        assert needle in text, (needle, rep.table())
    assert "FAIL" in rep.table()
