"""The thin path on real Kafka and a real SMTP sink: submit over HTTP, the timer holds it,
the validator passes it, the sender relays it, an outcome is published."""

from __future__ import annotations

import asyncio
import json
import time
from email import message_from_bytes
from pathlib import Path

import httpx
import jsonschema
import pytest

from schemas.codec import decode, decode_as
from schemas.events import Delivered, Due
from schemas.jsonschema import JSON_DIR
from tests.integration.conftest import Stack, read_values_to_end

pytestmark = pytest.mark.kafka


def wait_for_eml(outbox: Path, needle: str, timeout: float = 60) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for path in outbox.glob("*.eml") if outbox.exists() else []:
            if needle.encode() in path.read_bytes():
                return path
        time.sleep(0.1)
    raise AssertionError(f"no .eml containing {needle!r} in {outbox}")


def body(subject: str, **extra: object) -> dict[str, object]:
    return {
        "from": "Kairos Test <hello@example.com>",
        "to": "user@example.org",
        "subject": subject,
        "text": "hello",
        **extra,
    }


async def outcome_for(stack: Stack, message_id: str, timeout: float = 30) -> bytes:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for raw in await read_values_to_end(
            stack.settings.kafka_bootstrap or "", stack.settings.topic("outcomes")
        ):
            if json.loads(raw)["message_id"] == message_id:
                return raw
        await asyncio.sleep(0.1)
    raise AssertionError(f"no outcome for {message_id}")


async def test_immediate_send_reaches_the_sink(pipeline: Stack, http: httpx.AsyncClient) -> None:
    r = await http.post("/email", json=body("immediate"))
    assert r.status_code == 201, r.text
    message_id = r.json()["id"]
    eml = wait_for_eml(pipeline.outbox, message_id)
    msg = message_from_bytes(eml.read_bytes())
    assert msg["Subject"] == "immediate"
    assert msg["Date"] is not None
    raw = await outcome_for(pipeline, message_id)
    schema = json.loads((JSON_DIR / "topics" / "outcomes.schema.json").read_text())
    jsonschema.Draft202012Validator(schema).validate(json.loads(raw))
    outcome = decode(raw, "outcomes")
    assert isinstance(outcome, Delivered)
    assert outcome.smtp_code == 250


async def test_scheduled_send_arrives_no_earlier_than_its_second(
    pipeline: Stack, http: httpx.AsyncClient
) -> None:
    due = int(time.time()) + 3
    r = await http.post("/email", json=body("scheduled", scheduledAt=due))
    assert r.status_code == 202, r.text
    payload = r.json()
    message_id = payload["id"]
    assert payload == {
        "id": message_id,
        "scheduled_at": due,
        "response": f"Scheduled as {message_id} for {due}",
    }
    eml = wait_for_eml(pipeline.outbox, message_id)
    stored_at = float(eml.name.split("-", 1)[0])
    assert stored_at >= due, f"delivered {due - stored_at:.3f}s early"
    # delivered, so its due event is on the topic (read to its end offsets)
    dues = [
        decode_as(v, Due)
        for v in await read_values_to_end(
            pipeline.settings.kafka_bootstrap or "", pipeline.settings.topic("due")
        )
    ]
    mine = [d for d in dues if d.message_id == message_id]
    assert mine and all(d.emitted_at.timestamp() >= due for d in mine)
    outcome = decode(await outcome_for(pipeline, message_id), "outcomes")
    assert isinstance(outcome, Delivered)
    assert outcome.delivered_at.timestamp() >= due
    assert outcome.due_at == due


async def test_bad_schedule_is_rejected_never_sent(
    pipeline: Stack, http: httpx.AsyncClient
) -> None:
    r = await http.post("/email", json=body("bad", scheduledAt="2026-05-15T10:00:00"))
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "SCHEDULED_AT_NO_OFFSET"
    assert r.json()["error"]["field"] == "scheduledAt"


def _sample(text: str, name: str, **labels: str) -> float:
    """The value of one Prometheus sample in an exposition text (0 when absent)."""
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


async def test_every_service_exports_metrics(pipeline: Stack, http: httpx.AsyncClient) -> None:
    r = await http.post("/email", json=body("metrics"))
    assert r.status_code == 201
    wait_for_eml(pipeline.outbox, r.json()["id"])
    await outcome_for(pipeline, r.json()["id"])
    ingest = (await http.get("/metrics")).text
    assert _sample(ingest, "kairos_events_total", service="ingest", event="scheduled") >= 1
    ports = {s: pipeline.health_port(s) for s in ("timer", "validator", "sender")}
    async with httpx.AsyncClient(timeout=10) as client:
        texts = {
            s: (await client.get(f"http://127.0.0.1:{p}/metrics")).text for s, p in ports.items()
        }
    assert _sample(texts["timer"], "kairos_events_total", service="timer", event="due") >= 1
    assert _sample(texts["timer"], "kairos_due_lateness_seconds_count", stage="due") >= 1
    assert (
        _sample(texts["validator"], "kairos_events_total", service="validator", event="dispatched")
        >= 1
    )
    assert _sample(texts["sender"], "kairos_events_total", service="sender", event="delivered") >= 1
    assert _sample(texts["sender"], "kairos_due_lateness_seconds_count", stage="delivered") >= 1
    assert "kairos_consumer_lag" in texts["sender"]
