"""Reference data on real Kafka: the admin API, views in other processes, restarts, auth,
and no API key in clear anywhere."""

from __future__ import annotations

import asyncio
import time

import httpx
import orjson
import pytest

from kairos.kafka.clients import make_admin
from services.reference.view import ReferenceView, key_hash
from tests.integration.conftest import Stack, read_values_to_end

pytestmark = pytest.mark.kafka


def email(domain: str = "example.com") -> dict[str, object]:
    return {"from": f"hi@{domain}", "to": "u@example.org", "subject": "s", "text": "t"}


async def test_a_change_reaches_another_process_within_a_second(stack: Stack) -> None:
    stack.start("ingest")
    account, _key = stack.create_account("propagation")
    view = ReferenceView(stack.settings, stack.settings.kafka_bootstrap or "")
    await view.start()
    try:
        await view.wait_caught_up(30)
        assert view.domain_verified(account, "example.com")
        lags = []
        for action in ("unverify", "verify", "unverify"):
            started = time.monotonic()
            r = stack.admin("POST", f"/accounts/{account}/domains/example.com/{action}")
            assert r.status_code == 200, r.text
            want = action == "verify"
            assert await view.wait_until(
                lambda v, want=want: v.domain_verified(account, "example.com") == want, limit=5
            )
            lags.append(time.monotonic() - started)
        print(
            f"\nadmin change visible in another process after {max(lags) * 1000:.0f} ms "
            f"(worst of {len(lags)}, admin call included)"
        )
        assert max(lags) < 1.0
    finally:
        await view.stop()


async def test_a_restarted_view_is_identical(stack: Stack) -> None:
    stack.start("ingest")
    account, _key = stack.create_account("restart", domain="restart.test")
    stack.admin(
        "POST",
        f"/accounts/{account}/suppressions",
        json={"address": "a@b.test", "reason": "complaint"},
    )
    stack.admin(
        "POST",
        f"/accounts/{account}/suppressions",
        json={"address": "c@d.test", "reason": "manual"},
    )
    stack.admin("DELETE", f"/accounts/{account}/suppressions/c@d.test")
    stack.admin("POST", f"/accounts/{account}/keys")
    stack.admin("PUT", f"/accounts/{account}/plan", json={"plan": "free"})
    snapshots = []
    for _ in range(2):
        view = ReferenceView(stack.settings, stack.settings.kafka_bootstrap or "")
        await view.start()
        await view.wait_caught_up(30)
        snapshots.append(view.snapshot())
        await view.stop()
    assert snapshots[0] == snapshots[1]
    assert snapshots[0]["accounts"][account]["plan"]["name"] == "free"
    assert set(snapshots[0]["suppressions"]) == {f"{account}/a@b.test"}
    # the service itself, restarted, answers the same
    stack.stop("ingest")
    stack.start("ingest")
    r = stack.admin("GET", f"/accounts/{account}")
    assert r.json()["plan"]["name"] == "free" and len(r.json()["keys"]) == 2


async def test_auth_revocation_and_disabled_accounts(stack: Stack) -> None:
    stack.start("ingest")
    account, key = stack.create_account("auth")
    async with httpx.AsyncClient(base_url=stack.http, timeout=30) as client:
        r = await client.post("/email", json=email())
        assert (r.status_code, r.json()["error"]["code"]) == (401, "UNAUTHORIZED")
        r = await client.post("/email", json=email(), headers={"Authorization": "Bearer nope"})
        assert (r.status_code, r.json()["error"]["code"]) == (401, "UNAUTHORIZED")
        ok = {"Authorization": f"Bearer {key}"}
        assert (await client.post("/email", json=email(), headers=ok)).status_code == 201
        r = await client.post("/email", json=email("other.test"), headers=ok)
        assert (r.status_code, r.json()["error"]["code"]) == (403, "DOMAIN_NOT_OWNED")
        second = stack.admin("POST", f"/accounts/{account}/keys").json()["api_key"]
        key_id = key[:12]
        assert stack.admin("DELETE", f"/keys/{key_id}").status_code == 200
        r = await client.post("/email", json=email(), headers=ok)
        assert r.status_code == 401, "a revoked key stops at once"
        other = {"Authorization": f"Bearer {second}"}
        assert (await client.post("/email", json=email(), headers=other)).status_code == 201
        stack.admin("POST", f"/accounts/{account}/disable")
        r = await client.post("/email", json=email(), headers=other)
        assert (r.status_code, r.json()["error"]["code"]) == (403, "ACCOUNT_DISABLED")


async def test_admin_bad_input(stack: Stack) -> None:
    stack.start("ingest")
    account, _ = stack.create_account("bad-input")
    cases = [
        (("POST", "/accounts/acc_nope/disable"), {}, 404, "ACCOUNT_NOT_FOUND", "account_id"),
        (
            ("POST", f"/accounts/{account}/domains"),
            {"json": {"domain": "not a domain"}},
            400,
            "INVALID_DOMAIN",
            "domain",
        ),
        (
            ("POST", f"/accounts/{account}/domains"),
            {"json": {"domain": "example.com"}},
            409,
            "DOMAIN_EXISTS",
            "domain",
        ),
        (
            ("POST", f"/accounts/{account}/domains/nope.test/verify"),
            {},
            404,
            "DOMAIN_NOT_FOUND",
            "domain",
        ),
        (
            ("POST", f"/accounts/{account}/suppressions"),
            {"json": {"address": "bad"}},
            400,
            "INVALID_ADDRESS",
            "address",
        ),
        (("DELETE", "/keys/kai_missing"), {}, 404, "KEY_NOT_FOUND", "key_id"),
        (("POST", "/accounts"), {"json": {"name": "bad-input"}}, 409, "ACCOUNT_EXISTS", "name"),
        (
            ("PUT", f"/accounts/{account}/plan"),
            {"json": {"plan": "gold"}},
            400,
            "UNKNOWN_PLAN",
            "plan",
        ),
    ]
    for (method, path), kwargs, status, code, field in cases:
        r = stack.admin(method, path, **kwargs)
        assert (r.status_code, r.json()["error"]["code"], r.json()["error"]["field"]) == (
            status,
            code,
            field,
        ), (path, r.text)
    r = httpx.get(f"{stack.http}/admin/accounts", headers={"Authorization": "Bearer wrong"})
    assert (r.status_code, r.json()["error"]["code"]) == (401, "UNAUTHORIZED")
    assert httpx.get(f"{stack.http}/admin/accounts").status_code == 401


async def test_no_api_key_in_clear_in_any_topic_or_log(stack: Stack) -> None:
    stack.start("sink", "ingest", "timer", "validator", "sender")
    bootstrap = stack.settings.kafka_bootstrap or ""
    account, key = stack.create_account("secrets")
    second = stack.admin("POST", f"/accounts/{account}/keys").json()["api_key"]
    async with httpx.AsyncClient(base_url=stack.http, timeout=30) as client:
        headers = {"Authorization": f"Bearer {key}"}
        r = await client.post("/email", json=email(), headers=headers)
        assert r.status_code == 201
        message_id = r.json()["id"]
        bad = await client.post("/email", json={**email(), "scheduledAt": "bad"}, headers=headers)
        assert bad.status_code == 400
    assert stack.admin("DELETE", f"/keys/{second[:12]}").status_code == 200
    # the message went all the way: its outcome is the last record it causes
    deadline = time.monotonic() + 60
    while not any(
        orjson.loads(v)["message_id"] == message_id
        for v in await read_values_to_end(bootstrap, stack.settings.topic("outcomes"))
    ):
        assert time.monotonic() < deadline, f"no outcome for {message_id}"
        await asyncio.sleep(0.1)
    admin = make_admin(bootstrap)
    await admin.start()
    try:
        topics = [t for t in await admin.list_topics() if t.startswith(stack.settings.topic_prefix)]
    finally:
        await admin.close()
    assert len(topics) >= 8
    scanned: dict[str, list[bytes]] = {}
    for topic in topics:
        scanned[topic] = await read_values_to_end(bootstrap, topic)
        for value in scanned[topic]:
            for secret in (key, second):
                assert secret.encode() not in value, f"API key in clear on {topic}"
    # what was scanned includes every record that had a key to leak: both keys' records (the
    # second created, then revoked) and the message sent with the first, at every stage
    keys = [orjson.loads(v) for v in scanned[stack.settings.topic("api-keys")] if v]
    assert {(k["key_sha256"], k["status"]) for k in keys} >= {
        (key_hash(key), "active"),
        (key_hash(second), "active"),
        (key_hash(second), "revoked"),
    }
    for stage in ("schedule", "due", "dispatch", "outcomes"):
        mine = [
            v
            for v in scanned[stack.settings.topic(stage)]
            if orjson.loads(v).get("message_id") == message_id
        ]
        assert mine, f"the message's record on {stage} was not scanned"
    assert stack.logs is not None
    logs = {p.name: p.read_text(errors="replace") for p in stack.logs.glob("*.log")}
    assert {f"{s}.log" for s in ("ingest", "timer", "validator", "sender")} <= set(logs)
    assert message_id in logs["sender.log"], "the logs read are not the ones of this run"
    for name, text in logs.items():
        assert key not in text and second not in text, f"API key in clear in {name}"
    records = sum(len(v) for v in scanned.values())
    print(
        f"\nscanned {records} records on {len(topics)} topics and {len(logs)} service logs: "
        "no API key in clear"
    )
