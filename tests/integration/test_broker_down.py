"""A broker that is down: ingest answers 503 / ``451 4.3.0``, never a yes; a refused
submission that the producer writes late is withdrawn (cancelled), never delivered; and
ingest recovers when the broker is back.

This test runs its own broker (the shared one cannot be stopped under other tests)."""

from __future__ import annotations

import asyncio
import json
import smtplib
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from kairos.kafka.local import LocalKafka
from kairos.settings import KairosSettings
from tests.integration.conftest import Stack, free_port, make_stack, read_topic
from tests.integration.test_pipeline import body

pytestmark = pytest.mark.kafka


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[LocalKafka]:
    settings = KairosSettings(
        state_dir=tmp_path / "broker",
        local_kafka_port=free_port(),
        local_kafka_controller_port=free_port(),
        local_kafka_heap="384m",
    )
    broker = LocalKafka.from_settings(settings)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


def smtp_submit(stack: Stack, key: str, subject: str) -> tuple[int, str]:
    port = int(stack.env["KAIROS_SMTP_PORT"])
    with smtplib.SMTP("127.0.0.1", port, timeout=60) as client:
        client.login("down", key)
        msg = (
            f"From: hello@example.com\r\nTo: u@example.org\r\nSubject: {subject}\r\n"
            f"X-Scheduled-At: {int(time.time()) + 3600}\r\n\r\nbody\r\n"
        )
        try:
            client.sendmail("hello@example.com", ["u@example.org"], msg)
        except smtplib.SMTPDataError as exc:
            return exc.smtp_code, exc.smtp_error.decode()
    return 250, ""


def test_a_broker_that_is_down_gets_503_and_451_never_a_yes(
    own_broker: LocalKafka, tmp_path: Path
) -> None:
    stack = make_stack(own_broker.bootstrap, tmp_path / "stack")
    try:
        stack.start("ingest")
        _account, key = stack.create_account("down")
        auth = {"Authorization": f"Bearer {key}"}
        due = int(time.time()) + 3600
        r = httpx.post(f"{stack.http}/email", json=body("up", scheduledAt=due), headers=auth)
        assert r.status_code == 202, r.text

        own_broker.stop()
        started = time.monotonic()
        r = httpx.post(
            f"{stack.http}/email", json=body("refused", scheduledAt=due), headers=auth, timeout=60
        )
        print(f"HTTP answered {r.status_code} after {time.monotonic() - started:.1f}s")
        assert r.status_code == 503, r.text
        assert r.json()["error"]["code"] == "BROKER_UNAVAILABLE"
        code, text = smtp_submit(stack, key, "refused over smtp")
        assert (code, text.split(":")[0]) == (451, "4.3.0 BROKER_UNAVAILABLE")

        own_broker.start()
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            r = httpx.post(
                f"{stack.http}/email", json=body("back", scheduledAt=due), headers=auth, timeout=60
            )
            if r.status_code == 202:
                break
            time.sleep(1)
        assert r.status_code == 202, r.text
        # whatever the producer wrote late of the refused submissions is followed by a cancel
        topic = stack.settings.topic("schedule")
        raw = asyncio.run(read_topic(own_broker.bootstrap, topic, 10_000, 5))
        values = [json.loads(v) for v in raw]
        written = {
            v["message_id"]: v["type"]
            for v in values
            if v["type"] == "scheduled" and "refused" in v["content"]["mime"]
        }
        cancels = {v["message_id"] for v in values if v["type"] == "cancel"}
        print(f"refused submissions written late: {len(written)}; cancels: {len(cancels)}")
        assert set(written) <= cancels
    finally:
        stack.stop_all()
