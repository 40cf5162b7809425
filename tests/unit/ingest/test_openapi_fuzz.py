"""schemathesis over the ingest's OpenAPI document, in-process on fakes (no broker): no
operation answers a 5xx or an error outside its documented shape, whatever the request.
``tests/integration/test_openapi_fuzz.py`` does the same against a running ingest."""

from __future__ import annotations

import schemathesis

from kairos.clock import FakeClock
from tests.unit.ingest.fakes import API_KEY, ingest
from tests.unit.ingest.fuzz import fuzz


def test_the_openapi_document_covers_every_front_door() -> None:
    app = ingest(FakeClock()).app
    paths = app.openapi()["paths"]
    for path, method in [
        ("/email", "post"),
        ("/email", "get"),
        ("/email/{message_id}", "get"),
        ("/email/{message_id}", "patch"),
        ("/email/{message_id}/cancel", "post"),
        ("/v3/mail/send", "post"),
        ("/v3/mail/batch", "post"),
        ("/v3/mail/batch/{batch_id}", "get"),
        ("/v3/user/scheduled_sends", "post"),
        ("/v3/user/scheduled_sends/{batch_id}", "delete"),
        ("/emails", "post"),
        ("/emails", "get"),
        ("/emails/batch", "post"),
        ("/emails/{email_id}", "get"),
        ("/emails/{email_id}", "patch"),
        ("/emails/{email_id}/cancel", "post"),
        ("/v3/{domain}/messages", "post"),
        ("/v3/{domain}/messages.mime", "post"),
    ]:
        assert method in paths[path], (method, path)
    for path, method in [("/email", "post"), ("/v3/mail/send", "post")]:
        body = paths[path][method]["requestBody"]["content"]["application/json"]
        assert body["schema"]["type"] == "object" and "example" in body, path


def test_no_request_gets_a_server_error_or_an_undocumented_error() -> None:
    app = ingest(FakeClock(), open_batch_limit=10_000).app
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    failures = fuzz(schema, {"Authorization": f"Bearer {API_KEY}"}, examples=60)
    assert failures == [], "\n\n".join(map(str, failures))
