"""The corpus of hostile SMTP sessions (tests/unit/ingest/test_smtp_corpus.py) against a real
ingest on real Kafka: each gets its reply code and stable code, never exception text, and the
connection stays usable."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.conftest import Stack, free_port, make_stack
from tests.unit.ingest.test_smtp_corpus import CORPUS, Case, run_case

pytestmark = pytest.mark.kafka


@pytest.fixture(scope="module")
def hostile_stack(bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = make_stack(bootstrap, tmp_path_factory.mktemp("smtp-hostile"))
    s.env["KAIROS_SMTP_PORT"] = str(free_port())
    try:
        s.start("ingest")
        account_id, api_key = s.create_account("hostile", domain="example.com")
        r = s.admin(
            "POST",
            f"/accounts/{account_id}/domains",
            json={"domain": "unverified.test", "verified": False},
        )
        assert r.status_code == 201, r.text
        # another account's verified domain: From or MAIL FROM there is spoofing
        s.create_account("other", domain="other.test")
        s.account_id, s.api_key = account_id, api_key
        yield s
    finally:
        s.stop_all()


@pytest.mark.parametrize("case", CORPUS, ids=[c.name for c in CORPUS])
def test_hostile_session_against_ingest(hostile_stack: Stack, case: Case) -> None:
    run_case("127.0.0.1", int(hostile_stack.env["KAIROS_SMTP_PORT"]), hostile_stack.api_key, case)
