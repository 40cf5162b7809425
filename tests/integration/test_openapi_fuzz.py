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

#: Generated requests per operation and mode.
EXAMPLES = 25


# a lookup of an unknown id waits for the projection (up to 2 s, see LifecycleProjection.sync),
# and the Resend and Mailgun doors added eight operations: more than the default 300 s on a
# loaded machine
@pytest.mark.timeout(900)
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
