"""The seeds' second validation, end to end: a message accepted at submit time fails at send
time, with a recorded reason and no delivery, when in the meantime its domain was unverified,
its recipient suppressed, or its account disabled or downgraded."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from schemas.codec import decode
from schemas.events import Delivered, Failed
from tests.integration.conftest import Stack, Watcher

pytestmark = pytest.mark.kafka


async def test_state_changed_after_scheduling_fails_at_send_time(stack: Stack) -> None:
    stack.start("sink", "ingest", "timer", "validator", "sender")
    cases = {}
    for name in ("control", "unverified", "suppressed", "disabled", "downgraded"):
        account, key = stack.create_account(name, domain=f"{name}.test")
        cases[name] = (account, key)
    due = int(time.time()) + 5
    ids = {}
    async with httpx.AsyncClient(base_url=stack.http, timeout=30) as client:
        for name, (_account, key) in cases.items():
            r = await client.post(
                "/email",
                headers={"Authorization": f"Bearer {key}"},
                json={
                    "from": f"hello@{name}.test",
                    "to": f"user-{name}@example.org",
                    "subject": name,
                    "text": "hi",
                    "scheduledAt": due,
                },
            )
            assert r.status_code == 202, r.text
            ids[r.json()["id"]] = name
    # the state changes while the messages wait
    acc = {n: a for n, (a, _k) in cases.items()}
    assert (
        stack.admin(
            "POST", f"/accounts/{acc['unverified']}/domains/unverified.test/unverify"
        ).status_code
        == 200
    )
    assert (
        stack.admin(
            "POST",
            f"/accounts/{acc['suppressed']}/suppressions",
            json={"address": "user-suppressed@example.org", "reason": "unsubscribe"},
        ).status_code
        == 201
    )
    assert stack.admin("POST", f"/accounts/{acc['disabled']}/disable").status_code == 200
    assert (
        stack.admin(
            "PUT", f"/accounts/{acc['downgraded']}/plan", json={"plan": "immediate"}
        ).status_code
        == 200
    )
    assert time.time() < due, "the changes must land before the due second"
    async with Watcher(stack.settings.kafka_bootstrap or "", stack.settings.topic("outcomes")) as w:
        await w.wait_for(lambda r: len(r) >= len(ids), timeout=60, what="five outcomes")
        got = {ids[o.message_id]: o for o in (decode(v, "outcomes") for _, v in w.records)}
    assert isinstance(got["control"], Delivered)
    expected = {
        "unverified": "domain_unverified",
        "suppressed": "recipient_suppressed",
        "disabled": "account_disabled",
        "downgraded": "plan_insufficient",
    }
    for name, reason in expected.items():
        outcome = got[name]
        assert isinstance(outcome, Failed), (name, outcome)
        assert (outcome.stage, outcome.reason) == ("validation", reason)
    delivered = [p.read_bytes() for p in Path(stack.outbox).glob("*.eml")]
    assert len(delivered) == 1 and b"user-control@example.org" in delivered[0]
