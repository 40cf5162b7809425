"""A record a stage cannot decode goes to the dead-letter topic with its origin, the stage and
the error (not a log line and a skip); ``kairos dead-letter`` lists it and replays it."""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import sys
import time

import pytest

from kairos.kafka.clients import make_producer
from tests.integration.conftest import Stack, read_values_to_end

pytestmark = pytest.mark.kafka


async def write(stack: Stack, topic: str, key: bytes, value: bytes) -> int:
    producer = make_producer(stack.settings.kafka_bootstrap or "")
    await producer.start()
    try:
        meta = await producer.send_and_wait(topic, value, key=key)
    finally:
        await producer.stop()
    return int(meta.offset)


def letters(stack: Stack, want: int, timeout: float = 60) -> list[dict[str, object]]:
    bootstrap = stack.settings.kafka_bootstrap or ""
    topic = stack.settings.topic("dead-letter")
    deadline = time.monotonic() + timeout
    found: list[dict[str, object]] = []
    while time.monotonic() < deadline and len(found) < want:
        found = [json.loads(v) for v in asyncio.run(read_values_to_end(bootstrap, topic))]
        if len(found) < want:
            time.sleep(0.2)
    return found


def cli(stack: Stack, *args: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "kairos.cli", "dead-letter", *args],
        env=stack.env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def test_poison_records_land_on_the_dead_letter_topic_and_replay(stack: Stack) -> None:
    stack.start("validator", "timer")
    due_topic = stack.settings.topic("due")
    offset = asyncio.run(write(stack, due_topic, b"m-poison", b"not json at all"))
    schedule_topic = stack.settings.topic("schedule")
    asyncio.run(write(stack, schedule_topic, b"m-poison-2", b'{"type": "scheduled"}'))

    found = letters(stack, 2)
    by_stage = {str(d["stage"]): d for d in found}
    assert set(by_stage) == {"validator", "timer"}, found
    v = by_stage["validator"]
    assert (v["origin_topic"], v["origin_offset"], v["reason"]) == (
        due_topic,
        offset,
        "undecodable",
    )
    assert base64.b64decode(str(v["value"])) == b"not json at all"
    assert base64.b64decode(str(v["key"])) == b"m-poison"
    assert "DecodeError" in str(v["error"])
    assert by_stage["timer"]["origin_topic"] == schedule_topic
    # the services kept going: healthy, and the poison did not stop them
    stack.wait_healthy("validator")
    stack.wait_healthy("timer")

    listed = cli(stack, "list", "--stage", "validator")
    assert str(v["event_id"]) in listed and f"{due_topic}:" in listed
    assert "replayed 1" in cli(stack, "replay", str(v["event_id"]))
    # replayed onto its origin: read again (and, still poison, dead-lettered again)
    again = letters(stack, 3)
    assert [d["origin_topic"] for d in again].count(due_topic) == 2
