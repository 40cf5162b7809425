"""The official Resend and Mailgun SDKs (Python and Node), pointed at a Kairos on a real broker,
with nothing else changed: schedule, read, reschedule, cancel and batch through Resend's; a
scheduled send with an attachment through Mailgun's. Every message arrives at the relay at its
second, none early; a cancelled one never does; an idempotent retry makes one message."""

from __future__ import annotations

import asyncio
import email.utils
import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest
import resend
from mailgun.client import Client as MailgunClient

from tests.integration.conftest import Stack
from tests.integration.test_pipeline import wait_for_eml

pytestmark = pytest.mark.kafka

NODE_DIR = Path(__file__).parents[1] / "sdk" / "node"
T = TypeVar("T")


def iso(second: int) -> str:
    return datetime.fromtimestamp(second, UTC).isoformat().replace("+00:00", "Z")


def arrived_at(stack: Stack, needle: str) -> float:
    """When the relay stored the message containing ``needle`` (its file's time stamp)."""
    return float(wait_for_eml(stack.outbox, needle).name.split("-", 1)[0])


def eml_count(stack: Stack, needle: str) -> int:
    if not stack.outbox.exists():
        return 0
    return sum(1 for p in stack.outbox.glob("*.eml") if needle.encode() in p.read_bytes())


def node() -> str:
    """The node program, with the SDK package installed (``make test`` installs it); a
    missing one skips the Node half on a developer's machine and fails it in CI."""
    program = shutil.which("node")
    missing = None
    if program is None:
        missing = "node is not installed (scripts/system-deps.sh installs it)"
    elif not (NODE_DIR / "node_modules" / "resend").exists():
        missing = f"the SDK package is not installed: npm ci --prefix {NODE_DIR}"
    if missing is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(missing)
        pytest.skip(missing)
    assert program is not None
    return program


def run_node(script: str, *args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    done = subprocess.run(
        [node(), str(NODE_DIR / script), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


async def eventually(call: Callable[[], T], timeout: float = 10) -> T:
    """``call()``'s answer once it no longer raises (the projection may lag a submission)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await asyncio.to_thread(call)
        except resend.exceptions.ResendError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


@pytest.fixture
def resend_sdk(pipeline: Stack) -> Any:
    resend.api_key = pipeline.api_key
    resend.api_url = pipeline.http  # the one line to change
    return resend


async def test_resend_python_sdk(pipeline: Stack, resend_sdk: Any) -> None:
    now = int(time.time())
    due = now + 5

    def send(subject: str, scheduled_at: str, **options: Any) -> Any:
        params = {
            "from": "Kairos <hello@example.com>",
            "to": ["user@example.org"],
            "subject": subject,
            "text": subject,
            "scheduled_at": scheduled_at,
            "attachments": [{"filename": "note.txt", "content": list(b"attached")}],
        }
        return resend.Emails.send(params, options or None)  # type: ignore[arg-type]

    key = {"idempotency_key": f"py-{now}"}
    first = await asyncio.to_thread(send, "py scheduled", iso(due), **key)
    retry = await asyncio.to_thread(send, "py scheduled", iso(due), **key)
    assert retry["id"] == first["id"] and first["scheduled_at"] == iso(due)
    got = await eventually(lambda: resend.Emails.get(first["id"]))
    assert (got["last_event"], got["scheduled_at"]) == ("scheduled", iso(due))

    moved = await asyncio.to_thread(send, "py moved", "in 1 hour")
    assert moved["scheduled_at"] == iso(now + 3600) or moved["scheduled_at"] == iso(now + 3601)
    cancelled = await asyncio.to_thread(send, "py cancelled", iso(now + 3600))
    await eventually(lambda: resend.Emails.get(moved["id"]))
    await eventually(lambda: resend.Emails.get(cancelled["id"]))
    new_due = int(time.time()) + 5
    updated = await asyncio.to_thread(
        resend.Emails.update, {"id": moved["id"], "scheduled_at": iso(new_due)}
    )
    assert updated["id"] == moved["id"]
    await asyncio.to_thread(resend.Emails.cancel, cancelled["id"])
    got = await asyncio.to_thread(resend.Emails.get, cancelled["id"])
    assert got["last_event"] == "canceled"

    batch_due = int(time.time()) + 5
    batch = await asyncio.to_thread(
        resend.Batch.send,
        [
            {
                "from": "hello@example.com",
                "to": "b1@example.org",
                "subject": "py batch 1",
                "text": "1",
                "scheduled_at": iso(batch_due),
            },
            {
                "from": "hello@example.com",
                "to": "b2@example.org",
                "subject": "py batch 2",
                "text": "2",
                "scheduled_at": iso(batch_due),
            },
        ],
    )
    assert len(batch["data"]) == 2
    listed = await eventually(lambda: _listed(resend.Emails.list({"limit": 100}), batch))
    assert {m["id"] for m in listed} >= {d["id"] for d in batch["data"]}

    with pytest.raises(resend.exceptions.ResendError) as refused:
        await asyncio.to_thread(send, "py past", "yesterday")
    assert refused.value.error_type == "validation_error"

    for needle, at in [
        ("py scheduled", due),
        ("py moved", new_due),
        ("py batch 1", batch_due),
        ("py batch 2", batch_due),
    ]:
        assert arrived_at(pipeline, needle) >= at, f"{needle} arrived early"
    assert eml_count(pipeline, "py scheduled") == 1  # the retry made no second message
    assert b"note.txt" in wait_for_eml(pipeline.outbox, "py scheduled").read_bytes()
    assert eml_count(pipeline, "py cancelled") == 0
    got = await eventually(lambda: _delivered(resend.Emails.get(first["id"])), timeout=30)
    assert got["last_event"] == "delivered"


def _listed(page: Any, batch: Any) -> list[dict[str, Any]]:
    ids = {m["id"] for m in page["data"]}
    if not {d["id"] for d in batch["data"]} <= ids:
        raise resend.exceptions.ResendError(404, "not_found", "not listed yet", "")
    return list(page["data"])


def _delivered(got: Any) -> Any:
    if got["last_event"] != "delivered":
        raise resend.exceptions.ResendError(404, "not_found", "not delivered yet", "")
    return got


async def test_resend_node_sdk(pipeline: Stack) -> None:
    env = {"RESEND_BASE_URL": pipeline.http, "RESEND_API_KEY": pipeline.api_key}

    def call(action: str, **args: Any) -> dict[str, Any]:
        return run_node("resend.mjs", action, json.dumps(args), env=env)

    async def settled(action: str, **args: Any) -> dict[str, Any]:
        deadline = time.monotonic() + 10
        while True:
            result = await asyncio.to_thread(call, action, **args)
            if result["error"] is None or time.monotonic() > deadline:
                return result
            await asyncio.sleep(0.2)

    now = int(time.time())
    due = now + 6
    message = {"from": "hello@example.com", "to": "user@example.org", "subject": "js scheduled",
               "text": "hi", "scheduledAt": iso(due),
               "attachments": [{"filename": "note.txt", "content": "YXR0YWNoZWQ="}]}  # fmt: skip
    key = {"idempotencyKey": f"js-{now}"}
    first = await asyncio.to_thread(call, "send", email=message, options=key)
    assert first["error"] is None, first
    retry = await asyncio.to_thread(call, "send", email=message, options=key)
    assert retry["data"]["id"] == first["data"]["id"]
    got = await settled("get", id=first["data"]["id"])
    assert (got["data"]["last_event"], got["data"]["scheduled_at"]) == ("scheduled", iso(due))

    later = {**message, "subject": "js moved", "scheduledAt": "tomorrow at 9am"}
    moved = await asyncio.to_thread(call, "send", email=later)
    cancelled = await asyncio.to_thread(call, "send", email={**later, "subject": "js cancelled"})
    await settled("get", id=moved["data"]["id"])
    await settled("get", id=cancelled["data"]["id"])
    new_due = int(time.time()) + 6
    updated = await asyncio.to_thread(
        call, "update", id=moved["data"]["id"], scheduledAt=iso(new_due)
    )
    assert updated["error"] is None, updated
    assert (await asyncio.to_thread(call, "cancel", id=cancelled["data"]["id"]))["error"] is None

    batch_due = int(time.time()) + 6
    emails = [
        {"from": "hello@example.com", "to": f"j{i}@example.org", "subject": f"js batch {i}",
         "text": "b", "scheduledAt": iso(batch_due)}
        for i in (1, 2)
    ] + [{"from": "hello@example.com", "to": "j3@example.org", "subject": "js bad",
          "text": "b", "scheduledAt": "the day after never"}]  # fmt: skip
    batch = await asyncio.to_thread(
        call, "batch", emails=emails, options={"batchValidation": "permissive"}
    )
    assert batch["error"] is None, batch
    assert len(batch["data"]["data"]) == 2
    assert [e["index"] for e in batch["data"]["errors"]] == [2]
    listed = await settled("list", options={"limit": 100})
    assert listed["data"]["object"] == "list"

    refused = await asyncio.to_thread(call, "send", email={**message, "scheduledAt": "in 40 days"})
    assert refused["error"]["name"] == "validation_error"
    assert refused["error"]["statusCode"] == 422

    for needle, at in [
        ("js scheduled", due),
        ("js moved", new_due),
        ("js batch 1", batch_due),
        ("js batch 2", batch_due),
    ]:
        assert arrived_at(pipeline, needle) >= at, f"{needle} arrived early"
    assert eml_count(pipeline, "js scheduled") == 1
    assert eml_count(pipeline, "js cancelled") == 0
    assert eml_count(pipeline, "js bad") == 0


async def test_mailgun_python_sdk(pipeline: Stack) -> None:
    client = MailgunClient(auth=("api", pipeline.api_key), api_url=pipeline.http)
    due = int(time.time()) + 5
    data = {
        "from": "Kairos <hello@example.com>",
        "to": "user@example.org, Other <other@example.org>",
        "subject": "mg py scheduled",
        "text": "hello",
        "o:deliverytime": email.utils.formatdate(due, usegmt=True),
        "o:tag": "welcome",
        "h:X-Campaign": "spring",
    }
    files = [("attachment", ("report.csv", b"a,b\n1,2\n"))]
    r = await asyncio.to_thread(
        client.messages.create, data=data, files=files, domain="example.com"
    )
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["message"] == "Queued. Thank you."
    assert answer["id"].startswith("<") and answer["id"].endswith("@example.com>")

    r = await asyncio.to_thread(
        client.messages.create,
        data={**data, "o:deliverytime": email.utils.formatdate(due + 4 * 86400, usegmt=True)},
        domain="example.com",
    )
    assert (r.status_code, r.json()["code"]) == (400, "SCHEDULED_AT_TOO_FAR")
    r = await asyncio.to_thread(client.messages.create, data=data, domain="not-mine.test")
    assert r.status_code == 404

    eml = wait_for_eml(pipeline.outbox, "mg py scheduled")
    assert float(eml.name.split("-", 1)[0]) >= due, "arrived early"
    raw = eml.read_bytes()
    assert b"report.csv" in raw and b"X-Campaign: spring" in raw
    assert answer["id"].strip("<>").split("@")[0].encode() in raw


async def test_mailgun_js_sdk(pipeline: Stack) -> None:
    due = int(time.time()) + 5
    args = {
        "key": pipeline.api_key,
        "url": pipeline.http,
        "domain": "example.com",
        "message": {
            "from": "hello@example.com",
            "to": ["user@example.org"],
            "subject": "mg js scheduled",
            "text": "hello",
            "o:deliverytime": email.utils.formatdate(due, usegmt=True),
        },
        "attachment": {"filename": "invoice.txt", "text": "paid"},
    }
    result = await asyncio.to_thread(run_node, "mailgun.mjs", json.dumps(args))
    assert result.get("data", {}).get("status") == 200, result
    assert result["data"]["message"] == "Queued. Thank you."
    bad = {**args, "message": {**args["message"], "o:deliverytime": "next tuesday"}}
    result = await asyncio.to_thread(run_node, "mailgun.mjs", json.dumps(bad))
    assert result["error"]["status"] == 400, result
    eml = wait_for_eml(pipeline.outbox, "mg js scheduled")
    assert float(eml.name.split("-", 1)[0]) >= due, "arrived early"
    assert b"invoice.txt" in eml.read_bytes()
    assert eml_count(pipeline, "mg js scheduled") == 1
