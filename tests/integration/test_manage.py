"""Managing scheduled mail on the real pipeline: status and timeline, listing, cancel, pause,
resume and reschedule by id; the official ``sendgrid`` library against ``/v3`` (batches,
scheduled sends); and tenancy (another account's ids are not found)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any

import httpx
import pytest
from python_http_client.exceptions import BadRequestsError, HTTPError
from sendgrid import SendGridAPIClient
from sendgrid.helpers.mail import BatchId, Mail, SendAt

from tests.integration.conftest import Stack, free_port
from tests.integration.test_pipeline import body, wait_for_eml

pytestmark = pytest.mark.kafka


def eml_count(stack: Stack, needle: str) -> int:
    if not stack.outbox.exists():
        return 0
    return sum(1 for p in stack.outbox.glob("*.eml") if needle.encode() in p.read_bytes())


async def status_becomes(
    http: httpx.AsyncClient, message_id: str, status: str, timeout: float = 30
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    got: dict[str, Any] = {}
    while time.monotonic() < deadline:
        r = await http.get(f"/email/{message_id}")
        got = r.json()
        if r.status_code == 200 and got["status"] == status:
            return got
        await asyncio.sleep(0.2)
    raise AssertionError(f"{message_id} never became {status}: {got}")


async def test_status_and_timeline_follow_a_message(
    pipeline: Stack, http: httpx.AsyncClient
) -> None:
    due = int(time.time()) + 3
    r = await http.post("/email", json=body("followed", scheduledAt=due))
    message_id = r.json()["id"]
    started = time.monotonic()
    got = await status_becomes(http, message_id, "scheduled", timeout=5)
    print(f"status visible after {time.monotonic() - started:.3f}s")
    assert got["scheduled_at"] == due and got["subject"] == "followed"
    assert got["to"] == ["user@example.org"]
    done = await status_becomes(http, message_id, "delivered")
    kinds = [e["type"] for e in done["timeline"]]
    assert kinds == ["scheduled", "due", "delivered"], kinds
    assert done["timeline"][2]["smtp_code"] == 250


async def test_list_pages_pending_messages_in_due_order(
    pipeline: Stack, http: httpx.AsyncClient
) -> None:
    base = int(time.time()) + 3000
    ids = []
    for i in range(5):
        r = await http.post("/email", json=body(f"listed {i}", scheduledAt=base + 4 - i))
        ids.append(r.json()["id"])
    window = {"due_from": str(base), "due_to": str(base + 4), "limit": "2"}
    pages: list[str] = []
    cursor = None
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        params = {**window, **({"cursor": cursor} if cursor else {})}
        page = (await http.get("/email", params=params)).json()
        pages += [m["id"] for m in page["data"]]
        cursor = page["next_cursor"]
        if not page["has_more"]:
            if len(pages) == 5:
                break
            pages, cursor = [], None  # not all projected yet: start over
            await asyncio.sleep(0.2)
    assert pages == list(reversed(ids))
    r = await http.get("/email", params={"status": "nonsense"})
    assert (r.status_code, r.json()["error"]["code"]) == (400, "INVALID_QUERY")
    r = await http.get("/email", params={"due_from": "yesterday"})
    assert (r.status_code, r.json()["error"]["field"]) == (400, "due_from")


async def test_cancel_by_id_and_refusals(pipeline: Stack, http: httpx.AsyncClient) -> None:
    due = int(time.time()) + 4
    message_id = (await http.post("/email", json=body("cancel me", scheduledAt=due))).json()["id"]
    r = await http.post(f"/email/{message_id}/cancel")
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "cancelled"
    r = await http.post(f"/email/{message_id}/cancel")
    assert (r.status_code, r.json()["error"]["code"]) == (409, "MESSAGE_NOT_PENDING")
    r = await http.patch(f"/email/{message_id}", json={"scheduledAt": due + 60})
    assert (r.status_code, r.json()["error"]["code"]) == (409, "MESSAGE_NOT_PENDING")
    await asyncio.sleep(max(0.0, due + 3 - time.time()))
    assert eml_count(pipeline, message_id) == 0
    got = (await http.get(f"/email/{message_id}")).json()
    assert got["status"] == "cancelled"
    assert [e["type"] for e in got["timeline"]][:3] == ["scheduled", "cancel", "cancelled"]
    r = await http.post("/email/00000000-0000-0000-0000-000000000000/cancel")
    assert (r.status_code, r.json()["error"]["code"]) == (404, "NOT_FOUND")


async def test_reschedule_by_id(pipeline: Stack, http: httpx.AsyncClient) -> None:
    now = int(time.time())
    message_id = (await http.post("/email", json=body("moved", scheduledAt=now + 3000))).json()[
        "id"
    ]
    r = await http.patch(f"/email/{message_id}", json={"scheduledAt": now - 5})
    assert (r.status_code, r.json()["error"]["code"]) == (400, "SCHEDULED_AT_IN_PAST")
    r = await http.patch(f"/email/{message_id}", json={"scheduledAt": "2030-01-01T00:00:00"})
    assert r.json()["error"]["code"] == "SCHEDULED_AT_NO_OFFSET"
    r = await http.patch(f"/email/{message_id}", json={"subject": "x"})
    assert (r.status_code, r.json()["error"]["code"]) == (400, "INVALID_REQUEST")
    new_due = int(time.time()) + 3
    r = await http.patch(f"/email/{message_id}", json={"id": message_id, "scheduledAt": new_due})
    assert r.status_code == 200, r.text
    assert r.json()["scheduled_at"] == new_due
    eml = wait_for_eml(pipeline.outbox, message_id)
    assert float(eml.name.split("-", 1)[0]) >= new_due
    await status_becomes(http, message_id, "delivered")
    r = await http.patch(f"/email/{message_id}", json={"scheduledAt": new_due + 600})
    assert (r.status_code, r.json()["error"]["code"]) == (409, "MESSAGE_NOT_PENDING")


async def test_pause_and_resume_by_id(pipeline: Stack, http: httpx.AsyncClient) -> None:
    due = int(time.time()) + 3
    message_id = (await http.post("/email", json=body("held", scheduledAt=due))).json()["id"]
    r = await http.post(f"/email/{message_id}/pause")
    assert (r.status_code, r.json()["status"]) == (200, "paused")
    await asyncio.sleep(max(0.0, due + 3 - time.time()))
    assert eml_count(pipeline, message_id) == 0
    listed = (await http.get("/email", params={"status": "paused"})).json()["data"]
    assert message_id in [m["id"] for m in listed]
    r = await http.post(f"/email/{message_id}/resume")
    assert r.status_code == 200, r.text
    wait_for_eml(pipeline.outbox, message_id)
    await status_becomes(http, message_id, "delivered")


async def test_another_account_gets_404_for_everything(
    pipeline: Stack, http: httpx.AsyncClient
) -> None:
    mine = (
        await http.post("/email", json=body("private", scheduledAt=int(time.time()) + 3000))
    ).json()["id"]
    batch = (await http.post("/v3/mail/batch")).json()["batch_id"]
    await status_becomes(http, mine, "scheduled", timeout=5)
    r = pipeline.admin(
        "POST", "/accounts", json={"name": "intruder", "domain": "intruder.test", "plan": "pro"}
    )
    other = {"Authorization": f"Bearer {r.json()['api_key']}"}
    async with httpx.AsyncClient(base_url=pipeline.http, headers=other, timeout=30) as them:
        for method, path, payload in [
            ("GET", f"/email/{mine}", None),
            ("POST", f"/email/{mine}/cancel", None),
            ("POST", f"/email/{mine}/pause", None),
            ("PATCH", f"/email/{mine}", {"scheduledAt": int(time.time()) + 60}),
        ]:
            r = await them.request(method, path, json=payload)
            assert (r.status_code, r.json()["error"]["code"]) == (404, "NOT_FOUND"), path
        listed = (await them.get("/email", params={"status": "pending"})).json()["data"]
        assert mine not in [m["id"] for m in listed]
        assert (await them.get(f"/v3/mail/batch/{batch}")).status_code == 400
        r = await them.post("/v3/user/scheduled_sends", json={"batch_id": batch, "status": "pause"})
        assert r.status_code == 400 and r.json()["errors"][0]["field"] == "batch_id"
        assert (await them.get(f"/v3/user/scheduled_sends/{batch}")).status_code == 404
    got = (await http.get(f"/email/{mine}")).json()
    assert got["status"] == "scheduled"


def _mail(to: list[str], subject: str, send_at: int, batch_id: str) -> Mail:
    mail = Mail(
        from_email="hello@example.com",
        to_emails=to,
        subject=subject,
        plain_text_content=subject,
        is_multiple=True,
    )
    mail.send_at = SendAt(send_at)
    mail.batch_id = BatchId(batch_id)
    return mail


async def test_the_sendgrid_library_pauses_resumes_and_cancels_batches(
    pipeline: Stack, http: httpx.AsyncClient
) -> None:
    sg = SendGridAPIClient(api_key=pipeline.api_key, host=pipeline.http)

    def call(fn: Any, *args: Any, **kwargs: Any) -> Any:
        return asyncio.to_thread(fn, *args, **kwargs)

    created = await call(sg.client.mail.batch.post)
    assert created.status_code == 201
    paused_batch = json.loads(created.body)["batch_id"]
    assert (await call(sg.client.mail.batch._(paused_batch).get)).status_code == 200
    cancelled_batch = json.loads((await call(sg.client.mail.batch.post)).body)["batch_id"]

    due = int(time.time()) + 4
    sent = await call(
        sg.send, _mail(["p1@example.org", "p2@example.org"], "sg paused", due, paused_batch)
    )
    assert sent.status_code == 202
    paused_ids = sent.headers["X-Kairos-Message-Ids"].split(",")
    assert len(paused_ids) == 2 and sent.headers["X-Message-Id"] == paused_ids[0]
    sent = await call(sg.send, _mail(["c1@example.org"], "sg cancelled", due, cancelled_batch))
    cancelled_id = sent.headers["X-Message-Id"]

    r = await call(
        sg.client.user.scheduled_sends.post,
        request_body={"batch_id": paused_batch, "status": "pause"},
    )
    assert r.status_code == 201
    r = await call(
        sg.client.user.scheduled_sends.post,
        request_body={"batch_id": cancelled_batch, "status": "cancel"},
    )
    assert r.status_code == 201
    listed = json.loads((await call(sg.client.user.scheduled_sends.get)).body)
    assert {(b["batch_id"], b["status"]) for b in listed} >= {
        (paused_batch, "pause"),
        (cancelled_batch, "cancel"),
    }
    one = json.loads((await call(sg.client.user.scheduled_sends._(paused_batch).get)).body)
    assert one == [{"batch_id": paused_batch, "status": "pause"}]

    await asyncio.sleep(max(0.0, due + 3 - time.time()))
    assert eml_count(pipeline, "sg paused") == 0
    for mid in paused_ids:
        await status_becomes(http, mid, "paused", timeout=5)
    got = await status_becomes(http, cancelled_id, "cancelled", timeout=10)
    assert "batch_cancel" in [e["type"] for e in got["timeline"]]

    with pytest.raises(HTTPError) as err:  # a cancelled batch stays cancelled
        await call(
            sg.client.user.scheduled_sends._(cancelled_batch).patch,
            request_body={"status": "pause"},
        )
    assert err.value.status_code == 400
    assert json.loads(err.value.body)["errors"][0]["help"] == "BATCH_CANCELLED"

    r = await call(sg.client.user.scheduled_sends._(paused_batch).delete)  # resume
    assert r.status_code == 204
    for mid in paused_ids:
        await status_becomes(http, mid, "delivered")
    assert eml_count(pipeline, "sg paused") == 2
    assert eml_count(pipeline, "sg cancelled") == 0

    with pytest.raises(BadRequestsError) as bad:  # SendGrid's 72 h limit
        await call(sg.send, _mail(["x@example.org"], "too far", due + 73 * 3600, paused_batch))
    error = json.loads(bad.value.body)["errors"][0]
    assert (error["field"], error["help"]) == ("send_at", "SCHEDULED_AT_TOO_FAR")
    with pytest.raises(BadRequestsError) as bad:
        await call(sg.send, _mail(["x@example.org"], "no batch", due + 60, "not-a-batch"))
    assert json.loads(bad.value.body)["errors"][0]["field"] == "batch_id"


async def test_the_projection_is_shared_by_replicas_and_survives_a_restart(
    stack: Stack,
) -> None:
    """Two ingest replicas, each with its own projection: a message submitted to one is
    visible on the other; a restarted replica resumes from its stored offsets."""
    stack.start("sink", "ingest", "timer", "validator", "sender")
    port2 = free_port()
    stack.start_as(
        "ingest2",
        "ingest",
        env={"KAIROS_HTTP_PORT": str(port2), "KAIROS_SMTP_PORT": str(free_port())},
        wait=False,
    )
    _account, key = stack.create_account("replicas")
    auth = {"Authorization": f"Bearer {key}"}
    second = f"http://127.0.0.1:{port2}"
    async with (
        httpx.AsyncClient(base_url=stack.http, headers=auth, timeout=30) as one,
        httpx.AsyncClient(base_url=second, headers=auth, timeout=30) as two,
    ):
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if (await two.get("/healthz")).status_code == 200:
                    break
            await asyncio.sleep(0.2)
        mid = await one.post("/email", json=body("replicated", scheduledAt=int(time.time()) + 3))
        message_id = mid.json()["id"]
        await status_becomes(two, message_id, "scheduled", timeout=5)
        r = await two.post(f"/email/{message_id}/pause")
        assert (r.status_code, r.json()["status"]) == (200, "paused")
        await status_becomes(one, message_id, "paused", timeout=5)
        stack.stop("ingest")
        db = stack.settings.state_dir / f"lifecycle-{stack.settings.http_port}.sqlite3"
        assert db.exists()
        stack.start("ingest")
        got = await status_becomes(one, message_id, "paused", timeout=10)
        assert [e["type"] for e in got["timeline"]] == ["scheduled", "pause"]
        await one.post(f"/email/{message_id}/resume")
        await status_becomes(two, message_id, "delivered")
        got = (await one.get(f"/email/{message_id}")).json()
        assert [e["type"] for e in got["timeline"]] == [
            "scheduled", "pause", "resume", "due", "delivered"
        ]  # fmt: skip
