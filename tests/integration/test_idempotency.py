"""Idempotency keys across two ingest replicas on real Kafka: no process-local decision."""

from __future__ import annotations

import asyncio
import time

import httpx
import orjson
import pytest

from tests.integration.conftest import Stack, free_port, read_topic

pytestmark = pytest.mark.kafka


def body(subject: str = "once") -> dict[str, object]:
    return {
        "from": "hi@example.com",
        "to": "u@example.org",
        "subject": subject,
        "text": "t",
        "scheduledAt": int(time.time()) + 3600,
    }


async def test_keys_hold_across_replicas(stack: Stack) -> None:
    stack.start("ingest")
    port2 = free_port()
    stack.start_as(
        "ingest2",
        "ingest",
        env={"KAIROS_HTTP_PORT": str(port2), "KAIROS_SMTP_PORT": str(free_port())},
        wait=False,
    )
    _account, key = stack.create_account("idem")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert stack.procs["ingest2"].poll() is None, stack.tail("ingest2")
        try:
            if httpx.get(f"http://127.0.0.1:{port2}/healthz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        await asyncio.sleep(0.2)
    auth = {"Authorization": f"Bearer {key}"}
    one = httpx.AsyncClient(base_url=stack.http, headers=auth, timeout=30)
    two = httpx.AsyncClient(base_url=f"http://127.0.0.1:{port2}", headers=auth, timeout=30)
    async with one, two:
        b = body()
        first = await one.post("/email", json=b, headers={"Idempotency-Key": "k-1"})
        assert first.status_code == 202, first.text
        again = await two.post("/email", json=b, headers={"Idempotency-Key": "k-1"})
        assert (again.status_code, again.json()) == (202, first.json()), "replayed, not re-sent"
        other = await two.post("/email", json=body("different"), headers={"Idempotency-Key": "k-1"})
        assert (other.status_code, other.json()["error"]["code"]) == (
            409,
            "IDEMPOTENCY_BODY_MISMATCH",
        )
        too_long = await one.post("/email", json=b, headers={"Idempotency-Key": "x" * 257})
        assert too_long.status_code == 400
        # a race: the same new key on both replicas at once yields one message, never two
        ids = set()
        for i in range(5):
            race = body(f"race-{i}")
            answers = await asyncio.gather(
                one.post("/email", json=race, headers={"Idempotency-Key": f"race-{i}"}),
                two.post("/email", json=race, headers={"Idempotency-Key": f"race-{i}"}),
            )
            codes = sorted(a.status_code for a in answers)
            assert codes in ([202, 202], [202, 409]), [a.text for a in answers]
            got = {a.json()["id"] for a in answers if a.status_code == 202}
            assert len(got) == 1
            for a in answers:
                if a.status_code == 409:
                    assert a.json()["error"]["code"] == "IDEMPOTENCY_IN_FLIGHT"
            ids |= got
    values = await read_topic(
        stack.settings.kafka_bootstrap or "", stack.settings.topic("schedule"), 100, timeout=5
    )
    scheduled = [orjson.loads(v)["message_id"] for v in values]
    assert scheduled.count(first.json()["id"]) == 1
    assert all(scheduled.count(i) == 1 for i in ids)
    assert len(scheduled) == 1 + len(ids), "no message was created twice"
