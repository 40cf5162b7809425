"""A broker that is down for longer than a producer's request timeout, under the whole
pipeline: ingest answers 503 / ``451 4.3.0``, never a yes, and says it is not ready; no
refused submission is ever delivered, even the ones the producer writes late; every service
rides the outage out and recovers by itself (no restart); every accepted message is delivered
exactly once.

This test runs its own broker (the shared one cannot be stopped under other tests)."""

from __future__ import annotations

import asyncio
import json
import re
import smtplib
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from kairos.kafka.local import LocalKafka
from tests.integration.conftest import Stack, make_stack, own_broker, read_values_to_end
from tests.integration.test_pipeline import body

pytestmark = pytest.mark.kafka

SERVICES = ("sink", "ingest", "timer", "validator", "sender")
#: longer than the producers' request timeout (30 s): batches expire, and an idempotent
#: producer that sends again after that is answered OutOfOrderSequenceNumber
OUTAGE = 36.0


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[LocalKafka]:
    broker = own_broker(tmp_path / "broker")
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


def smtp_submit(stack: Stack, key: str, subject: str, due: int) -> tuple[int, str]:
    port = int(stack.env["KAIROS_SMTP_PORT"])
    with smtplib.SMTP("127.0.0.1", port, timeout=60) as client:
        client.login("down", key)
        msg = (
            f"From: hello@example.com\r\nTo: u@example.org\r\nSubject: {subject}\r\n"
            f"X-Scheduled-At: {due}\r\n\r\nbody\r\n"
        )
        try:
            client.sendmail("hello@example.com", ["u@example.org"], msg)
        except smtplib.SMTPDataError as exc:
            return exc.smtp_code, exc.smtp_error.decode()
    return 250, ""


def ingest_ready(stack: Stack) -> bool:
    try:
        return httpx.get(f"{stack.http}/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def delivered_subjects(outbox: Path) -> Counter[str]:
    found: Counter[str] = Counter()
    for path in outbox.glob("*.eml") if outbox.exists() else []:
        m = re.search(rb"^Subject: (\S+)", path.read_bytes(), re.MULTILINE)
        if m:
            found[m.group(1).decode()] += 1
    return found


def test_an_outage_loses_nothing_and_a_refusal_is_a_no(broker: LocalKafka, tmp_path: Path) -> None:
    stack = make_stack(broker.bootstrap, tmp_path / "stack")
    try:
        stack.start(*SERVICES)
        _account, key = stack.create_account("down")
        auth = {"Authorization": f"Bearer {key}"}
        accepted: dict[str, str] = {}  # subject -> message id

        def submit(subject: str, delay: int | None) -> httpx.Response:
            extra = {} if delay is None else {"scheduledAt": int(time.time()) + delay}
            return httpx.post(
                f"{stack.http}/email", json=body(subject, **extra), headers=auth, timeout=60
            )

        # before: immediate ones, and scheduled ones that fall due during the outage
        for i in range(10):
            for subject, delay in ((f"before-now-{i}", None), (f"before-due-{i}", 4)):
                r = submit(subject, delay)
                assert r.status_code in (201, 202), r.text
                accepted[subject] = r.json()["id"]

        broker.stop()
        down_at = time.monotonic()
        # during: refused, never a yes; immediate sends too (those were delivered once)
        with ThreadPoolExecutor(8) as pool:
            refused = list(
                pool.map(
                    lambda i: (f"refused-{i}", submit(f"refused-{i}", None if i % 2 else 3600)),
                    range(8),
                )
            )
        for subject, r in refused:
            assert r.status_code == 503, (subject, r.status_code, r.text)
            assert r.json()["error"]["code"] == "BROKER_UNAVAILABLE"
        code, text = smtp_submit(stack, key, "refused-smtp", int(time.time()) + 3600)
        assert (code, text.split(":")[0]) == (451, "4.3.0 BROKER_UNAVAILABLE")
        assert not ingest_ready(stack), "ingest says ready while it cannot write"
        time.sleep(max(0.0, OUTAGE - (time.monotonic() - down_at)))
        # a submission now finds an expired batch behind it: the producer must be rebuilt
        r = submit("refused-late", None)
        assert r.status_code == 503, r.text
        broker.start()

        # after: every service recovers by itself
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not ingest_ready(stack):
            time.sleep(0.5)
        for service in ("timer", "validator", "sender"):
            stack.wait_healthy(service, timeout=max(1.0, deadline - time.monotonic()))
        r = submit("after-now", None)
        while r.status_code == 503 and time.monotonic() < deadline:
            time.sleep(1)
            r = submit("after-now", None)
        assert r.status_code == 201, r.text
        accepted["after-now"] = r.json()["id"]

        # every accepted message delivered exactly once; no refused one ever
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            seen = delivered_subjects(stack.outbox)
            if all(seen[s] for s in accepted):
                break
            time.sleep(0.5)
        # what was written late is withdrawn by the timer: an outcome says so
        topic = stack.settings.topic("schedule")
        values = [json.loads(v) for v in asyncio.run(read_values_to_end(broker.bootstrap, topic))]
        late = {
            v["message_id"]
            for v in values
            if v["type"] == "scheduled" and "refused-" in v["content"]["mime"]
        }
        outcomes = [
            json.loads(v)
            for v in asyncio.run(
                read_values_to_end(broker.bootstrap, stack.settings.topic("outcomes"))
            )
        ]
        withdrawn = {
            o["message_id"]
            for o in outcomes
            if o["type"] == "cancelled" and o.get("scope") in ("withdrawn", "message")
        }
        seen = delivered_subjects(stack.outbox)
        print(
            f"accepted {len(accepted)}, refused {len(refused) + 2}, written late {len(late)}, "
            f"withdrawn or cancelled {len(late & withdrawn)}"
        )
        missing = [s for s in accepted if seen[s] == 0]
        twice = {s: n for s, n in seen.items() if n > 1}
        leaked = sorted(s for s in seen if s.startswith("refused-"))
        assert not missing, f"accepted but never delivered: {missing}"
        assert not twice, f"delivered more than once: {twice}"
        assert not leaked, f"refused but delivered: {leaked}"
        assert late <= withdrawn, f"written late and not withdrawn: {late - withdrawn}"
        for service in SERVICES:
            proc = stack.procs[service]
            assert proc.poll() is None, f"{service} exited {proc.returncode}: {stack.tail(service)}"
    finally:
        stack.stop_all()
