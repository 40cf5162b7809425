"""``kairos trace MESSAGE_ID`` on a running pipeline: the message's whole path from the topics."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import httpx
import pytest

from tests.integration.conftest import Stack

pytestmark = pytest.mark.kafka


def test_trace_prints_a_delivered_message_s_whole_path(pipeline: Stack) -> None:
    due = int(time.time()) + 2
    r = httpx.post(
        f"{pipeline.http}/email",
        headers={"Authorization": f"Bearer {pipeline.api_key}"},
        json={
            "from": "a@example.com",
            "to": "u@example.org",
            "subject": "t",
            "text": "x",
            "scheduledAt": due,
        },
        timeout=30,
    )
    assert r.status_code == 202, r.text
    message_id = r.json()["id"]
    command = [sys.executable, "-m", "kairos.cli", "trace", message_id, "--json"]
    deadline = time.monotonic() + 90
    while True:
        out = subprocess.run(command, env=pipeline.env, capture_output=True, text=True)
        steps = [json.loads(line) for line in out.stdout.splitlines()]
        if any(s["type"] == "delivered" for s in steps) or time.monotonic() > deadline:
            break
        time.sleep(1)
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
