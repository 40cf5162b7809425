"""``kairos trace MESSAGE_ID`` on a running pipeline: the message's whole path from the topics."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import httpx
import orjson
import pytest

from tests.integration.conftest import Stack, Watcher, scheduled_email

pytestmark = pytest.mark.kafka


async def test_trace_prints_a_delivered_message_s_whole_path(pipeline: Stack) -> None:
    outcomes = pipeline.settings.topic("outcomes")
    async with Watcher(pipeline.settings.kafka_bootstrap or "", outcomes) as w:
        async with httpx.AsyncClient(timeout=30) as client:
            r = await client.post(
                f"{pipeline.http}/email",
                headers={"Authorization": f"Bearer {pipeline.api_key}"},
                json=scheduled_email(int(time.time()) + 2),
            )
        assert r.status_code == 202, r.text
        message_id = r.json()["id"]
        # the outcome is the last event of the path: trace once it is on the topic
        await w.wait_for(
            lambda rs: any(
                o["message_id"] == message_id and o["type"] == "delivered"
                for o in (orjson.loads(v) for _, v in rs)
            ),
            timeout=90,
            what=f"{message_id} delivered",
        )
    command = [sys.executable, "-m", "kairos.cli", "trace", message_id, "--json"]
    out = subprocess.run(command, env=pipeline.env, capture_output=True, text=True)
    steps = [json.loads(line) for line in out.stdout.splitlines()]
    assert [(s["service"], s["type"]) for s in steps] == [
        ("ingest", "scheduled"),
        ("timer", "due"),
        ("validator", "dispatch"),
        ("sender", "delivered"),
    ], out.stderr
    assert steps[1]["lateness_ms"] >= 0 and steps[3]["smtp_code"] == 250
    missing = subprocess.run(
        [sys.executable, "-m", "kairos.cli", "trace", "no-such-id"],
        env=pipeline.env,
        capture_output=True,
        text=True,
    )
    assert missing.returncode == 1 and "no event of message no-such-id" in missing.stderr
