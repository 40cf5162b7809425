"""Idempotency arbitration (pure): the first live claim in log order wins."""

from __future__ import annotations

from services.ingest.idempotency import Record, body_digest, decide

NOW = 1_800_000_000.0


def claim(cid: str, body: str = "b", at: float = NOW) -> Record:
    return Record("k", "claimed", cid, body, at)


def test_the_first_claim_wins() -> None:
    a, b = claim("a"), claim("b")
    assert decide([a, b], a, NOW).kind == "proceed"
    assert decide([a, b], b, NOW).kind == "in_flight"
    assert decide([a, claim("c", body="other")], claim("c", body="other"), NOW).kind == "mismatch"


def test_a_completed_winner_is_replayed() -> None:
    a, b = claim("a"), claim("b")
    done = Record("k", "completed", "a", "", NOW, {"status": 202, "body": {"id": "a"}})
    decision = decide([a, done, b], b, NOW)
    assert (decision.kind, decision.response) == ("replay", {"status": 202, "body": {"id": "a"}})


def test_released_and_expired_claims_do_not_win() -> None:
    a, b = claim("a"), claim("b")
    assert decide([a, Record("k", "released", "a", "", NOW), b], b, NOW).kind == "proceed"
    old = claim("old", at=NOW - 24 * 3600 - 1)
    assert decide([old, b], b, NOW).kind == "proceed"


def test_body_hash_ignores_key_order() -> None:
    assert body_digest({"a": 1, "b": [1, 2]}) == body_digest({"b": [1, 2], "a": 1})
    assert body_digest({"a": 1}) != body_digest({"a": 2})
