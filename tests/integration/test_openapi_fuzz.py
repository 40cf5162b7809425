"""schemathesis against the OpenAPI document of a running ingest (real Kafka behind it): a
bounded number of generated requests per operation, valid by the document and not, with the
stack's API key; no answer is a 5xx or an error outside its API's documented shape. The admin
API (another token, and operations that would revoke the key under test) is left out."""

from __future__ import annotations

import time

import pytest
import schemathesis

from tests.integration.conftest import Stack
from tests.unit.ingest.fuzz import fuzz

pytestmark = pytest.mark.kafka

#: Generated requests per operation and mode: the whole run stays well under two minutes.
EXAMPLES = 25


def test_no_request_to_a_running_ingest_gets_a_server_error(stack: Stack) -> None:
    stack.start("ingest")
    stack.create_account("fuzz")
    schema = schemathesis.openapi.from_url(f"{stack.http}/openapi.json")
    paths = {result.ok().path for result in schema.get_all_operations()}
    assert {"/email", "/email/{message_id}", "/v3/mail/send", "/v3/mail/batch"} <= paths
    started = time.monotonic()
    failures = fuzz(
        schema,
        {"Authorization": f"Bearer {stack.api_key}"},
        examples=EXAMPLES,
        call={"timeout": 30},
    )
    print(f"fuzzed {len(paths)} paths in {time.monotonic() - started:.1f}s")
    assert failures == [], "\n\n".join(map(str, failures)) + "\n" + stack.tail("ingest", 60)
    assert stack.procs["ingest"].poll() is None, "the ingest is still running"
