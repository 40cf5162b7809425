"""The HTTP front doors against hostile input, on fakes (no broker): ``POST /email``, SendGrid
``/v3`` and the management API answer every bad request with a 4xx, a stable code and the
documented error shape, never a 5xx or an exception's text."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from aiokafka.errors import KafkaConnectionError
from fastapi.testclient import TestClient

from kairos.clock import FakeClock
from services.ingest.idempotency import Record, key_digest
from tests.unit.ingest.fakes import ACCOUNT, API_KEY, Ingest, batch, ingest

NOW = 1_800_000_000.0
AUTH = {"Authorization": f"Bearer {API_KEY}"}
JSON = {"Content-Type": "application/json"}


def ascii_json(body: Any) -> bytes:
    """JSON with every non-ASCII character escaped (so a lone surrogate can be sent)."""
    return json.dumps(body).encode()


@pytest.fixture
def kairos() -> Ingest:
    return ingest(FakeClock(NOW), open_batch_limit=3)


@pytest.fixture
def client(kairos: Ingest) -> Iterator[TestClient]:
    with TestClient(kairos.app, raise_server_exceptions=False) as c:
        c.headers.update(AUTH)
        yield c


def email(**extra: Any) -> dict[str, Any]:
    return {
        "from": "Hello <hi@example.com>",
        "to": "u@example.org",
        "subject": "s",
        "text": "t",
        "scheduledAt": int(NOW) + 600,
    } | extra


def sendgrid(**extra: Any) -> dict[str, Any]:
    return {
        "personalizations": [{"to": [{"email": "u@example.org"}]}],
        "from": {"email": "hi@example.com", "name": "Hello"},
        "subject": "s",
        "content": [{"type": "text/plain", "value": "t"}],
    } | extra


def error_code(r: Any, status: int = 400) -> str:
    """The stable code of an ``{"error": ...}`` answer (asserting its shape and status)."""
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert set(error) == {"code", "message", "field"}
    return str(error["code"])


def sg_code(r: Any, status: int = 400) -> tuple[str, str | None]:
    """The code and field of a SendGrid-shaped answer."""
    assert r.status_code == status, r.text
    [error] = r.json()["errors"]
    assert set(error) == {"message", "field", "help"}
    return error["help"], error["field"]


# -- POST /email ------------------------------------------------------------------------


def test_a_crlf_header_name_is_refused_and_nothing_is_sent(
    client: TestClient, kairos: Ingest
) -> None:
    r = client.post("/email", json=email(headers={"X-A\r\nFrom": "ceo@bank.example"}))
    assert error_code(r) == "INVALID_HEADER"
    assert kairos.publisher.events == []


@pytest.mark.parametrize(
    ("extra", "code"),
    [
        ({"headers": {"X-A": "v\r\nFrom: ceo@bank.example"}}, "INVALID_HEADER"),
        ({"headers": {"from": "ceo@bank.example"}}, "RESERVED_HEADER"),
        ({"headers": {"SENDER": "ceo@bank.example"}}, "RESERVED_HEADER"),
        ({"subject": "s\r\nBcc: all@example.org"}, "INVALID_HEADER"),
        ({"to": "u@example.org\r\nFrom: ceo@bank.example"}, "INVALID_HEADER"),
        ({"to": ["u@example.org", "v@example.org\n"]}, "INVALID_HEADER"),
        (
            {"attachments": [{"filename": "a\r\nX: y", "content": "YQ=="}]},
            "INVALID_HEADER",
        ),
        (
            {"attachments": [{"filename": "a", "content": "YQ==", "contentType": "a/b\r\nX: y"}]},
            "INVALID_ATTACHMENT",
        ),
        ({"subject": "\ud800"}, "INVALID_REQUEST"),
        ({"to": "a@b..c"}, "INVALID_ADDRESS"),
        ({"scheduledAt": "0001-01-01T00:00:00+23:59"}, "SCHEDULED_AT_IN_PAST"),
    ],
)
def test_hostile_fields_are_a_400_with_a_stable_code(
    client: TestClient, kairos: Ingest, extra: dict[str, Any], code: str
) -> None:
    assert (
        error_code(client.post("/email", content=ascii_json(email(**extra)), headers=JSON)) == code
    )
    assert kairos.publisher.events == []


@pytest.mark.parametrize(
    "body", [b"{not json", b"[1, 2]", b"", b'"text"', b"1" * 5000, b'{"a": 1e99999}']
)
def test_a_body_that_is_not_a_json_object_is_an_error_in_the_documented_shape(
    client: TestClient, body: bytes
) -> None:
    r = client.post("/email", content=body, headers={"Content-Type": "application/json"})
    assert error_code(r) == "INVALID_REQUEST"


def test_a_lone_surrogate_with_an_idempotency_key_is_a_400(client: TestClient) -> None:
    body = orjson.dumps(email()).replace(b'"s"', b'"\\ud800"')
    r = client.post(
        "/email",
        content=body,
        headers={"Content-Type": "application/json", "Idempotency-Key": "k"},
    )
    assert error_code(r) == "INVALID_REQUEST"


def test_a_huge_integer_with_an_idempotency_key_is_no_500(client: TestClient) -> None:
    r = client.post("/email", json=email(scheduledAt=2**64), headers={"Idempotency-Key": "huge"})
    assert error_code(r) == "SCHEDULED_AT_TOO_FAR"


def test_unknown_paths_and_methods_answer_in_their_api_s_shape(client: TestClient) -> None:
    assert error_code(client.get("/nope"), 404) == "NOT_FOUND"
    assert error_code(client.put("/email"), 405) == "METHOD_NOT_ALLOWED"
    assert sg_code(client.get("/v3/nope"), 404) == ("NOT_FOUND", None)


def test_an_accepted_message_has_one_from(client: TestClient, kairos: Ingest) -> None:
    r = client.post("/email", json=email(headers={"X-Campaign": "spring"}))
    assert r.status_code == 202, r.text
    [event] = kairos.publisher.events
    mime = event.content.mime  # type: ignore[attr-defined]
    assert mime.count("\r\nFrom:") + mime.startswith("From:") == 1


# -- idempotency: a failing broker, and claims of requests that died ---------------------


@pytest.mark.parametrize("failure", ["error", "hang"])
def test_a_failing_broker_under_an_idempotency_key_is_a_json_503(
    client: TestClient, kairos: Ingest, failure: str
) -> None:
    producer: Any = kairos.idempotency.producer
    if failure == "error":
        producer.error = KafkaConnectionError("no broker")
    else:
        producer.hang = True
    r = client.post("/email", json=email(), headers={"Idempotency-Key": "k-1"})
    assert error_code(r, 503) == "BROKER_UNAVAILABLE"
    assert kairos.publisher.events == []


def test_a_broker_failing_after_the_claim_is_a_json_503(client: TestClient, kairos: Ingest) -> None:
    kairos.publisher.down = True
    r = client.post("/email", json=email(), headers={"Idempotency-Key": "k-1"})
    assert error_code(r, 503) == "BROKER_UNAVAILABLE"
    kairos.publisher.down = False  # and the key is free again (released)
    r = client.post("/email", json=email(), headers={"Idempotency-Key": "k-1"})
    assert r.status_code == 202, r.text


def test_a_key_claimed_by_a_request_that_died_is_free_after_the_in_flight_timeout(
    client: TestClient, kairos: Ingest
) -> None:
    """A replica killed mid-request (kill -9) leaves a claim without completion or release."""
    digest = key_digest(ACCOUNT, "k-dead")
    orphan = Record(digest, "claimed", "dead", "another body", NOW, expires_at=NOW + 60)
    kairos.idempotency.records[digest] = [orphan]
    r = client.post("/email", json=email(), headers={"Idempotency-Key": "k-dead"})
    assert error_code(r, 409) == "IDEMPOTENCY_BODY_MISMATCH"
    kairos.clock.set(NOW + 59)
    r = client.post("/email", json=email(), headers={"Idempotency-Key": "k-dead"})
    assert error_code(r, 409) == "IDEMPOTENCY_BODY_MISMATCH"
    kairos.clock.set(NOW + 60)
    first = client.post("/email", json=email(), headers={"Idempotency-Key": "k-dead"})
    assert first.status_code == 202, first.text
    kairos.clock.set(NOW + 3600)  # completed: replayed, never sent twice
    again = client.post("/email", json=email(), headers={"Idempotency-Key": "k-dead"})
    assert (again.status_code, again.json()) == (202, first.json())
    assert len(kairos.publisher.events) == 1


def test_claims_carry_the_in_flight_timeout_of_the_replica_that_wrote_them(
    kairos: Ingest,
) -> None:
    import asyncio

    decision = asyncio.run(kairos.idempotency.claim(ACCOUNT, "k", "body", "c-1"))
    assert (decision.kind, decision.expires_at) == ("proceed", NOW + 60)
    [claim] = kairos.idempotency.records[key_digest(ACCOUNT, "k")]
    assert claim.expires_at == NOW + 60


def test_a_request_outliving_its_claim_does_not_publish() -> None:
    """Once its claim has expired another request may hold the key: publishing then could
    send the message twice."""
    clock = FakeClock(NOW)

    class SlowScanner:
        async def check(self, raw: bytes) -> None:
            clock.advance(60)

    slow = ingest(clock, SlowScanner())
    with TestClient(slow.app, raise_server_exceptions=False) as c:
        r = c.post("/email", json=email(), headers={**AUTH, "Idempotency-Key": "slow"})
    assert error_code(r, 503) == "IDEMPOTENCY_CLAIM_EXPIRED"
    assert slow.publisher.events == []


# -- SendGrid /v3 -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({"from": {"email": "hi@example.com", "name": 5}}, ("INVALID_REQUEST", "from.name")),
        ({"headers": ["X-A", "b"]}, ("INVALID_REQUEST", "headers")),
        ({"headers": {"X-A": 5}}, ("INVALID_REQUEST", "headers.X-A")),
        ({"content": 5}, ("INVALID_REQUEST", "content")),
        ({"content": [{"type": "text/plain", "value": 5}]},
         ("INVALID_REQUEST", "content[0].value")),
        ({"mail_settings": "on"}, ("INVALID_REQUEST", "mail_settings")),
        ({"mail_settings": {"sandbox_mode": []}},
         ("INVALID_REQUEST", "mail_settings.sandbox_mode")),
        ({"personalizations": 5}, ("INVALID_REQUEST", "personalizations")),
        ({"personalizations": [{"to": [{"email": "u@example.org"}], "headers": "x"}]},
         ("INVALID_REQUEST", "personalizations[0].headers")),
        ({"attachments": "a"}, ("INVALID_REQUEST", "attachments")),
        ({"attachments": [{"filename": 1, "content": "YQ=="}]},
         ("INVALID_REQUEST", "attachments[0].filename")),
        ({"attachments": [{"filename": "a\r\nX: y", "content": "YQ=="}]},
         ("INVALID_HEADER", "attachments[0].filename")),
        ({"subject": 5}, ("INVALID_REQUEST", "subject")),
        ({"subject": "s\r\nFrom: ceo@bank.example"}, ("INVALID_HEADER", "subject")),
        ({"headers": {"X-A\r\nFrom": "ceo@bank.example"}}, ("INVALID_HEADER", "headers")),
        ({"headers": {"FROM": "ceo@bank.example"}}, ("RESERVED_HEADER", "headers")),
        ({"from": {"email": "hi@example.com\r\nFrom: ceo@bank.example"}},
         ("INVALID_HEADER", "from.email")),
        ({"from": {"email": "hi@example.com", "name": "H\nFrom: ceo@bank.example"}},
         ("INVALID_HEADER", "from.name")),
        ({"batch_id": 5}, ("INVALID_BATCH_ID", "batch_id")),
        ({"subject": "\ud800"}, ("INVALID_REQUEST", "subject")),
    ],
)  # fmt: skip
def test_sendgrid_refusals_are_400s_in_sendgrid_s_shape(
    client: TestClient, kairos: Ingest, extra: dict[str, Any], expected: tuple[str, str]
) -> None:
    r = client.post("/v3/mail/send", content=ascii_json(sendgrid(**extra)), headers=JSON)
    assert sg_code(r) == expected
    assert kairos.publisher.events == []


def test_sendgrid_bodies_that_are_not_json_objects_answer_in_sendgrid_s_shape(
    client: TestClient,
) -> None:
    for path in ("/v3/mail/send", "/v3/user/scheduled_sends"):
        r = client.post(path, content=b"{nope", headers={"Content-Type": "application/json"})
        assert sg_code(r)[0] == "INVALID_REQUEST", path
    r = client.patch("/v3/user/scheduled_sends/b", content=b"[]")
    assert r.status_code in (400, 404) and "errors" in r.json(), r.text


def test_sendgrid_sandbox_mode_validates_without_sending(
    client: TestClient, kairos: Ingest
) -> None:
    r = client.post(
        "/v3/mail/send", json=sendgrid(mail_settings={"sandbox_mode": {"enable": True}})
    )
    assert r.status_code == 200 and kairos.publisher.events == []
    r = client.post("/v3/mail/send", json=sendgrid())
    assert r.status_code == 202 and len(kairos.publisher.events) == 1


def test_open_batch_ids_are_limited_per_account(client: TestClient, kairos: Ingest) -> None:
    for _ in range(3):
        assert client.post("/v3/mail/batch").status_code == 201
    assert sg_code(client.post("/v3/mail/batch"), 429) == ("BATCH_LIMIT", None)
    assert len(kairos.view.batches) == 3
    kairos.clock.set(NOW + 10 * 86400 + 1)  # the first three have expired
    assert client.post("/v3/mail/batch").status_code == 201


def test_expired_and_other_accounts_batches_do_not_count(
    client: TestClient, kairos: Ingest
) -> None:
    kairos.view.batches["old"] = batch("old", NOW - 10 * 86400 - 1)
    kairos.view.batches["other"] = batch("other", NOW).model_copy(update={"account_id": "x"})
    for _ in range(3):
        assert client.post("/v3/mail/batch").status_code == 201
    assert sg_code(client.post("/v3/mail/batch"), 429)[0] == "BATCH_LIMIT"


def test_a_failing_broker_on_batches_is_a_503_in_sendgrid_s_shape(
    client: TestClient, kairos: Ingest
) -> None:
    kairos.view.batches["b1"] = batch("b1", NOW)
    kairos.writer.down = True
    assert sg_code(client.post("/v3/mail/batch"), 503)[0] == "BROKER_UNAVAILABLE"
    r = client.post("/v3/user/scheduled_sends", json={"batch_id": "b1", "status": "pause"})
    assert sg_code(r, 503)[0] == "BROKER_UNAVAILABLE"


# -- the management API -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("due_to=\u00b3", "due_to"),
        ("due_to=\u0663", "due_to"),
        (f"due_from={2**64}", "due_from"),
        (f"due_from=-{2**64}", "due_from"),
        ("due_from=9999-12-31T23:59:59", "due_from"),
        ("due_from=0000-01-01T00:00:00Z", "due_from"),
        ("status=nope", "status"),
        (
            "cursor=" + base64.urlsafe_b64encode(b'[9223372036854775808, "x"]').decode(),
            "cursor",
        ),
        ("cursor=%FF%FE", "cursor"),
    ],
)
def test_bad_list_queries_are_400_invalid_query(client: TestClient, query: str, field: str) -> None:
    r = client.get(f"/email?{query}")
    assert error_code(r) == "INVALID_QUERY"
    assert r.json()["error"]["field"] == field


def test_list_queries_within_range_work(client: TestClient) -> None:
    r = client.get("/email?due_from=0&due_to=2026-05-15T10:00:00Z&status=pending,failed")
    assert r.status_code == 200 and r.json()["data"] == []
    assert error_code(client.get("/email?limit=0")) == "INVALID_REQUEST"
    assert error_code(client.get("/email?limit=abc")) == "INVALID_REQUEST"


def test_management_bodies_that_are_not_json_objects_answer_in_the_documented_shape(
    client: TestClient,
) -> None:
    r = client.patch("/email/m-1", content=b"{nope", headers={"Content-Type": "application/json"})
    assert error_code(r) == "INVALID_REQUEST"
    r = client.patch("/email/m-1", json={"scheduledAt": "\u00b3"})
    assert error_code(r) == "SCHEDULED_AT_INVALID"
    assert error_code(client.get("/email/m-1"), 404) == "NOT_FOUND"
