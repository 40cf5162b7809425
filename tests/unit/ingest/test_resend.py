"""Resend's ``/emails`` API on fakes: every documented answer in Resend's shape, natural-language
times in the account's zone, batches, and management through the shared use cases."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient

from schemas.events import CancelRequested, RescheduleRequested
from services.ingest.idempotency import Record, body_digest, key_digest
from services.ingest.resend import email_object
from services.ingest.schedule import parse_natural_time
from tests.unit.ingest.conftest import NOW
from tests.unit.ingest.fakes import ACCOUNT, API_KEY, Ingest

AUTH = {"Authorization": f"Bearer {API_KEY}"}


def email(**extra: Any) -> dict[str, Any]:
    return {
        "from": "Hello <hello@example.com>",
        "to": ["a@example.org"],
        "subject": "s",
        "text": "hi",
        **extra,
    }


def iso(second: int) -> str:
    return datetime.fromtimestamp(second, UTC).isoformat().replace("+00:00", "Z")


def test_send_now_answers_the_id_only(app: Ingest, client: TestClient) -> None:
    r = client.post("/emails", json=email(), headers=AUTH)
    assert r.status_code == 200, r.text
    assert r.json() == {"id": r.json()["id"]}
    [event] = app.scheduled()
    assert event.message_id == r.json()["id"] and event.source == "resend"
    assert event.due_at == NOW


@pytest.mark.parametrize(
    ("phrase", "due"),
    [
        ("in 1 hour", NOW + 3600),
        ("2027-01-16T09:30:00Z", NOW + 86400 + 5400),
        ("2027-01-16T09:30:00.250+00:00", NOW + 86400 + 5401),  # a fraction rounds up
        ("tomorrow at 9am", NOW + 86400 + 3600),
        ("Friday at 3pm ET", NOW + 7 * 86400 + 12 * 3600),
    ],
)
def test_scheduled_at_resolves_and_is_echoed(
    app: Ingest, client: TestClient, phrase: str, due: int
) -> None:
    r = client.post("/emails", json=email(scheduled_at=phrase), headers=AUTH)
    assert r.status_code == 200, r.text
    assert r.json()["scheduled_at"] == iso(due)
    assert app.scheduled()[0].due_at == due


def test_a_time_without_zone_is_in_the_accounts_zone(app: Ingest, client: TestClient) -> None:
    app.view.account_state = app.view.account_state.model_copy(
        update={"time_zone": "America/New_York"}
    )
    r = client.post("/emails", json=email(scheduled_at="tomorrow at 9am"), headers=AUTH)
    assert r.json()["scheduled_at"] == "2027-01-16T14:00:00Z"
    r = client.post("/emails", json=email(scheduled_at="2027-01-16T09:00:00"), headers=AUTH)
    assert r.json()["scheduled_at"] == "2027-01-16T14:00:00Z"


def test_natural_language_is_relative_to_the_injected_now() -> None:
    assert parse_natural_time("in 2 days", NOW, None) == NOW + 2 * 86400
    assert parse_natural_time("in 2 days", NOW + 7, "Asia/Tokyo") == NOW + 7 + 2 * 86400


def error(r: Any) -> tuple[int, str, str]:
    body = r.json()
    assert set(body) == {"statusCode", "name", "message", "code"}, body
    assert body["statusCode"] == r.status_code
    return r.status_code, body["name"], body["code"]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (email(scheduled_at="whenever"), (422, "validation_error", "SCHEDULED_AT_INVALID")),
        (email(scheduled_at="yesterday"), (422, "validation_error", "SCHEDULED_AT_IN_PAST")),
        (email(scheduled_at="in 31 days"), (422, "validation_error", "SCHEDULED_AT_TOO_FAR")),
        (email(scheduled_at=""), (422, "validation_error", "SCHEDULED_AT_INVALID")),
        (email(scheduled_at=1800003600), (422, "validation_error", "SCHEDULED_AT_INVALID")),
        (email(scheduled_at="in 1 hour" * 20), (422, "validation_error", "SCHEDULED_AT_INVALID")),
        ({**email(), "from": None}, (422, "missing_required_field", "MISSING_FIELD")),
        ({**email(), "to": []}, (422, "missing_required_field", "MISSING_FIELD")),
        ({**email(), "subject": None}, (422, "missing_required_field", "MISSING_FIELD")),
        ({**email(), "text": None}, (422, "missing_required_field", "MISSING_BODY")),
        (email(to=[f"u{i}@example.org" for i in range(51)]),
         (422, "validation_error", "TOO_MANY_RECIPIENTS")),
        ({**email(), "from": "not an address"},
         (422, "invalid_from_address", "INVALID_ADDRESS")),
        ({**email(), "from": "x@unverified.test"},
         (403, "validation_error", "DOMAIN_NOT_VERIFIED")),
        ({**email(), "from": "x@elsewhere.test"}, (403, "validation_error", "DOMAIN_NOT_OWNED")),
        (email(headers={"Bcc": "spy@example.org"}), (422, "validation_error", "RESERVED_HEADER")),
        (email(headers={"X-A": "1\r\nBcc: spy@example.org"}),
         (422, "validation_error", "INVALID_HEADER")),
        (email(subject="s\r\nBcc: spy@example.org"), (422, "validation_error", "INVALID_HEADER")),
        (email(attachments=[{"filename": "a.txt", "path": "http://127.0.0.1/secret"}]),
         (422, "invalid_attachment", "INVALID_ATTACHMENT")),
        (email(attachments=[{"filename": "a.txt", "content": "not base64!"}]),
         (422, "invalid_attachment", "INVALID_ATTACHMENT")),
        (email(attachments=[{"content": "aGk="}]),
         (422, "invalid_attachment", "INVALID_ATTACHMENT")),
        (email(tags=[{"name": "bad name!"}]), (422, "validation_error", "INVALID_REQUEST")),
        (email(template={"id": "t"}), (422, "validation_error", "INVALID_REQUEST")),
        (email(surprise=1), (422, "validation_error", "INVALID_REQUEST")),
        (["not", "an", "object"], (422, "validation_error", "INVALID_REQUEST")),
    ],
)  # fmt: skip
def test_refusals_in_resends_shape(client: TestClient, body: Any, expected: Any) -> None:
    r = client.post("/emails", json=body, headers=AUTH)
    assert error(r) == expected


def test_nothing_is_sent_for_a_refusal(app: Ingest, client: TestClient) -> None:
    client.post("/emails", json=email(scheduled_at="last week"), headers=AUTH)
    client.post("/emails", content=b"{not json", headers=AUTH)
    assert app.scheduled() == []


def test_attachments_as_base64_and_as_byte_lists(app: Ingest, client: TestClient) -> None:
    r = client.post(
        "/emails",
        json=email(
            attachments=[
                {"filename": "a.txt", "content": base64.b64encode(b"first").decode()},
                {"filename": "b.pdf", "content": list(b"second")},
            ],
            tags=[{"name": "kind", "value": "welcome"}],
        ),
        headers=AUTH,
    )
    assert r.status_code == 200, r.text
    raw = app.scheduled()[0].content.raw()
    assert b'filename="a.txt"' in raw and b"application/pdf" in raw
    assert base64.b64encode(b"second") in raw


def test_keys_are_checked(client: TestClient) -> None:
    assert error(client.post("/emails", json=email())) == (
        401, "missing_api_key", "MISSING_API_KEY"
    )  # fmt: skip
    r = client.post("/emails", json=email(), headers={"Authorization": "Bearer nope"})
    assert error(r) == (403, "invalid_api_key", "INVALID_API_KEY")
    r = client.get("/emails/x", headers={"Authorization": "Bearer nope"})
    assert error(r) == (403, "invalid_api_key", "INVALID_API_KEY")


def test_a_disabled_account_is_refused(app: Ingest, client: TestClient) -> None:
    app.view.account_state = app.view.account_state.model_copy(update={"status": "disabled"})
    assert error(client.post("/emails", json=email(), headers=AUTH))[0] == 403


def test_idempotency(app: Ingest, client: TestClient) -> None:
    key = {**AUTH, "Idempotency-Key": "order-1"}
    first = client.post("/emails", json=email(scheduled_at="in 1 hour"), headers=key)
    again = client.post("/emails", json=email(scheduled_at="in 1 hour"), headers=key)
    assert first.json() == again.json()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert len(app.scheduled()) == 1
    other = client.post("/emails", json=email(subject="other"), headers=key)
    assert error(other) == (409, "invalid_idempotent_request", "IDEMPOTENCY_BODY_MISMATCH")
    long = {**AUTH, "Idempotency-Key": "k" * 257}
    r = client.post("/emails", json=email(), headers=long)
    assert error(r) == (400, "invalid_idempotency_key", "INVALID_IDEMPOTENCY_KEY")


def test_a_concurrent_request_with_the_key(app: Ingest, client: TestClient) -> None:
    """Another request with the key and the same body is still in flight."""
    digest = key_digest(ACCOUNT, "busy")
    held = Record(digest, "claimed", "first", body_digest(email()), NOW, expires_at=NOW + 60)
    app.idempotency.records[digest] = [held]
    r = client.post("/emails", json=email(), headers={**AUTH, "Idempotency-Key": "busy"})
    assert error(r) == (409, "concurrent_idempotent_requests", "IDEMPOTENCY_IN_FLIGHT")
    assert app.scheduled() == []


def test_batch_strict_is_all_or_nothing(app: Ingest, client: TestClient) -> None:
    good, bad = email(scheduled_at="in 1 hour"), {**email(), "from": "x@unverified.test"}
    r = client.post("/emails/batch", json=[good, good], headers=AUTH)
    assert r.status_code == 200, r.text
    assert len(r.json()["data"]) == 2 and "errors" not in r.json()
    assert len(app.scheduled()) == 2
    r = client.post("/emails/batch", json=[good, bad], headers=AUTH)
    assert error(r) == (403, "validation_error", "DOMAIN_NOT_VERIFIED")
    r = client.post("/emails/batch", json=[good, {**good, "to": None}], headers=AUTH)
    assert error(r) == (422, "missing_required_field", "MISSING_FIELD")
    assert len(app.scheduled()) == 2


def test_batch_permissive_sends_the_valid_ones(app: Ingest, client: TestClient) -> None:
    bad_time, bad_domain = email(scheduled_at="nope"), {**email(), "from": "x@unverified.test"}
    r = client.post(
        "/emails/batch",
        json=[email(), bad_time, email(subject="two"), bad_domain],
        headers={**AUTH, "x-batch-validation": "permissive"},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert len(body["data"]) == 2
    assert [(e["index"], e["code"]) for e in body["errors"]] == [
        (1, "SCHEDULED_AT_INVALID"),
        (3, "DOMAIN_NOT_VERIFIED"),
    ]
    assert [e.message_id for e in app.scheduled()] == [d["id"] for d in body["data"]]


@pytest.mark.parametrize(
    ("body", "headers", "code"),
    [
        ([], {}, "INVALID_REQUEST"),
        ({"not": "a list"}, {}, "INVALID_REQUEST"),
        ([email()] * 101, {}, "INVALID_REQUEST"),
        ([email()], {"x-batch-validation": "lenient"}, "INVALID_REQUEST"),
    ],
)
def test_batch_refusals(client: TestClient, body: Any, headers: dict[str, str], code: str) -> None:
    r = client.post("/emails/batch", json=body, headers={**AUTH, **headers})
    assert error(r) == (422, "validation_error", code)


def test_batch_idempotency(app: Ingest, client: TestClient) -> None:
    key = {**AUTH, "Idempotency-Key": "batch-1"}
    first = client.post("/emails/batch", json=[email(), email()], headers=key)
    again = client.post("/emails/batch", json=[email(), email()], headers=key)
    assert first.json() == again.json() and len(app.scheduled()) == 2


def project(app: Ingest) -> None:
    """Fold what was published into the fake projection, as the real one would."""
    from schemas.codec import encode
    from services.ingest.lifecycle import Record as LogRecord

    store = app.projection.store
    for offset, e in enumerate(app.publisher.events):
        store.apply([LogRecord("schedule", 0, offset, encode(e))])


def test_get_list_update_and_cancel_use_the_management_use_cases(
    app: Ingest, client: TestClient
) -> None:
    ids = [
        client.post("/emails", json=email(scheduled_at=f"in {h} hours"), headers=AUTH).json()["id"]
        for h in (3, 1, 2)
    ]
    project(app)
    got = client.get(f"/emails/{ids[1]}", headers=AUTH)
    assert got.status_code == 200, got.text
    obj = got.json()
    assert "statusCode" not in obj
    assert (obj["object"], obj["last_event"], obj["scheduled_at"]) == (
        "email", "scheduled", iso(NOW + 3600)
    )  # fmt: skip
    page = client.get("/emails", params={"limit": 2}, headers=AUTH).json()
    assert [m["id"] for m in page["data"]] == [ids[1], ids[2]] and page["has_more"]
    page = client.get("/emails", params={"after": ids[2]}, headers=AUTH).json()
    assert [m["id"] for m in page["data"]] == [ids[0]] and not page["has_more"]
    page = client.get("/emails", params={"before": ids[0], "limit": 1}, headers=AUTH).json()
    assert [m["id"] for m in page["data"]] == [ids[2]] and page["has_more"]

    r = client.patch(
        f"/emails/{ids[0]}", json={"id": ids[0], "scheduled_at": "in 5 hours"}, headers=AUTH
    )
    assert r.status_code == 200, r.text
    assert r.json()["scheduled_at"] == iso(NOW + 5 * 3600)
    [moved] = [e for e in app.publisher.events if isinstance(e, RescheduleRequested)]
    assert (moved.message_id, moved.due_at) == (ids[0], NOW + 5 * 3600)
    r = client.post(f"/emails/{ids[1]}/cancel", headers=AUTH)
    assert r.status_code == 200 and r.json() == {"object": "email", "id": ids[1]}
    assert [e.message_id for e in app.publisher.events if isinstance(e, CancelRequested)] == [
        ids[1]
    ]


@pytest.mark.parametrize(
    ("method", "path", "body", "expected"),
    [
        ("GET", "/emails/unknown", None, (404, "not_found", "NOT_FOUND")),
        ("POST", "/emails/unknown/cancel", None, (404, "not_found", "NOT_FOUND")),
        ("PATCH", "/emails/unknown", {"scheduled_at": "in 1 hour"},
         (404, "not_found", "NOT_FOUND")),
        ("PATCH", "/emails/unknown", {"scheduled_at": "yesterday"},
         (422, "validation_error", "SCHEDULED_AT_IN_PAST")),
        ("PATCH", "/emails/unknown", {"scheduled_at": "in 40 days"},
         (422, "validation_error", "SCHEDULED_AT_TOO_FAR")),
        ("PATCH", "/emails/unknown", {}, (422, "missing_required_field", "MISSING_FIELD")),
        ("PATCH", "/emails/unknown", {"id": "other", "scheduled_at": "in 1 hour"},
         (422, "validation_error", "INVALID_REQUEST")),
        ("PATCH", "/emails/unknown", {"subject": "x"},
         (422, "validation_error", "INVALID_REQUEST")),
        ("GET", "/emails?limit=101", None, (422, "validation_error", "INVALID_REQUEST")),
        ("GET", "/emails?limit=abc", None, (422, "validation_error", "INVALID_REQUEST")),
        ("GET", "/emails?after=a&before=b", None, (422, "validation_error", "INVALID_REQUEST")),
        ("GET", "/emails?after=unknown", None, (422, "validation_error", "INVALID_REQUEST")),
        ("DELETE", "/emails/unknown", None, (405, "method_not_allowed", "METHOD_NOT_ALLOWED")),
    ],
)  # fmt: skip
def test_management_refusals(
    client: TestClient, method: str, path: str, body: Any, expected: Any
) -> None:
    r = client.request(method, path, json=body, headers=AUTH)
    assert error(r) == expected


def test_a_settled_message_cannot_be_cancelled(app: Ingest, client: TestClient) -> None:
    mid = client.post("/emails", json=email(), headers=AUTH).json()["id"]
    project(app)
    app.projection.store._db.execute(
        "UPDATE messages SET status = 'delivered' WHERE message_id = ?", (mid,)
    )
    r = client.post(f"/emails/{mid}/cancel", headers=AUTH)
    assert error(r) == (409, "validation_error", "MESSAGE_NOT_PENDING")
    assert client.get(f"/emails/{mid}", headers=AUTH).json()["last_event"] == "delivered"


@pytest.mark.parametrize(
    ("status", "reason", "last_event"),
    [
        ("scheduled", None, "scheduled"),
        ("paused", None, "scheduled"),
        ("deferred", None, "delivery_delayed"),
        ("due", None, "queued"),
        ("delivered", None, "delivered"),
        ("failed", "smtp_permanent", "bounced"),
        ("failed", "recipient_suppressed", "failed"),
        ("cancelled", None, "canceled"),
    ],
)
def test_last_event_maps_kairos_status(status: str, reason: str | None, last_event: str) -> None:
    timeline = [{"type": "failed", "reason": reason}] if reason else []
    found = {"id": "m", "status": status, "to": [], "subject": "", "submitted_at": None,
             "scheduled_at": NOW, "timeline": timeline}  # fmt: skip
    assert email_object(found)["last_event"] == last_event


def test_openapi_documents_the_resend_endpoints(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert {"post", "get"} <= set(paths["/emails"]) or "post" in paths["/emails"]
    assert "requestBody" in paths["/emails"]["post"]
    assert "requestBody" in paths["/emails/batch"]["post"]
    assert {"get", "patch"} <= set(paths["/emails/{email_id}"])
    assert "post" in paths["/emails/{email_id}/cancel"]
