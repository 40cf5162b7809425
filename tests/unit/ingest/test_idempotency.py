"""Idempotency arbitration (pure): the first live claim in log order wins."""

from __future__ import annotations

import pytest

from services.ingest.idempotency import Decision, Record, body_digest, decide

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


def test_body_hash_takes_any_json_value() -> None:
    """A JSON body may hold integers beyond 64 bits (found by schemathesis: a 500)."""
    big = {"b": 2**64, "a": -(2**70)}
    assert body_digest(big) == body_digest(dict(reversed(big.items())))
    assert body_digest(big) != body_digest({"b": 2**64 + 1, "a": -(2**70)})


def in_flight(cid: str, at: float = NOW, expires_in: float = 60.0, body: str = "b") -> Record:
    return Record("k", "claimed", cid, body, at, expires_at=at + expires_in)


def test_a_claim_whose_request_died_frees_its_key_at_its_own_expiry() -> None:
    """A replica killed mid-request never writes completed or released: its claim holds the
    key only until the expiry it carries, not for 24 h."""
    dead = in_flight("dead")
    retry_early = in_flight("early", at=NOW + 30)
    assert decide([dead, retry_early], retry_early, NOW + 30).kind == "in_flight"
    lost = Record("k", "released", "early", "", NOW + 30)  # a loser releases its claim
    retry = in_flight("retry", at=NOW + 60)
    assert decide([dead, retry_early, lost, retry], retry, NOW + 60).kind == "proceed"
    assert decide([dead, retry], retry, NOW + 61).kind == "proceed"


def test_the_claim_decides_its_expiry_not_the_reader() -> None:
    """Replicas configured differently read the same log the same way."""
    short = in_flight("short", expires_in=5)
    long = in_flight("long", expires_in=600)
    later = in_flight("later", at=NOW + 100)
    assert decide([short, later], later, NOW + 100).kind == "proceed"
    assert decide([long, later], later, NOW + 100).kind == "in_flight"


def test_a_completed_claim_is_replayed_until_its_completion_expires() -> None:
    first = in_flight("first")
    response = {"status": 202, "body": {"id": "first"}}
    done = Record("k", "completed", "first", "", NOW + 1, response, NOW + 1 + 24 * 3600)
    retry = in_flight("retry", at=NOW + 3600)
    assert decide([first, done, retry], retry, NOW + 3600) == Decision("replay", response)
    late = in_flight("late", at=NOW + 1 + 24 * 3600)
    assert decide([first, done, late], late, late.at).kind == "proceed"


def test_a_winner_learns_when_its_claim_stops_holding_the_key() -> None:
    mine = in_flight("mine", expires_in=60)
    assert decide([mine], mine, NOW) == Decision("proceed", expires_at=NOW + 60)


def test_records_of_old_replicas_and_garbage_decode_safely() -> None:
    old = Record.decode(b'{"key":"k","state":"claimed","claim_id":"a","body_hash":"b","at":1.0}')
    assert old is not None and old.expiry(60) == 61.0
    newer = Record.decode(in_flight("a").encode()[:-1] + b',"future":1}')
    assert newer == in_flight("a")
    assert Record.decode(b"not json") is None
    assert Record.decode(b'{"key":"k"}') is None
    assert Record.decode(None) is None


def test_the_in_memory_log_forgets_keys_past_their_expiry() -> None:
    """Bounded over months: a key is held in memory while one of its records can still decide
    something (a completion is replayed for 24 h), and forgotten after."""
    import asyncio

    from kairos.clock import FakeClock
    from tests.unit.ingest.fakes import idempotency_log

    clock = FakeClock(NOW)
    log = idempotency_log(clock)

    async def run() -> None:
        decision = await log.claim("acc", "k1", "h", "c1")
        assert decision.kind == "proceed"
        await log.complete("acc", "k1", "c1", {"ids": ["m"], "dues": [None]})
        await log.claim("acc", "k2", "h", "c2")  # in flight, its request died
        clock.advance(3600)
        assert log.sweep(clock.now()) == 1  # k2's claim expired; k1 is still replayed
        assert (await log.claim("acc", "k1", "h", "c3")).kind == "replay"
        clock.advance(24 * 3600)
        assert log.sweep(clock.now()) == 1 and log.records == {}
        assert (await log.claim("acc", "k1", "h", "c4")).kind == "proceed"

    asyncio.run(run())


def test_a_sweep_looks_only_at_what_expired(monkeypatch: pytest.MonkeyPatch) -> None:
    """A day of keys at line rate is millions: a sweep every minute must not walk them all."""
    from kairos.clock import FakeClock
    from services.ingest.idempotency import TTL_SECONDS
    from tests.unit.ingest.fakes import idempotency_log

    clock = FakeClock(NOW)
    log = idempotency_log(clock)
    log.add(Record("old", "claimed", "c0", "h", NOW - 2 * TTL_SECONDS, expires_at=NOW - 1))
    for i in range(1_000):
        log.add(Record(f"k{i}", "claimed", f"c{i}", "h", NOW, expires_at=NOW + 600))
    # a key with an early record and a later one lives until the later one expires
    log.add(Record("both", "claimed", "cb", "h", NOW, expires_at=NOW - 1))
    log.add(Record("both", "completed", "cb", "h", NOW, expires_at=NOW + 60))
    looked = 0
    expiry = Record.expiry

    def counting(self: Record, default: float) -> float:
        nonlocal looked
        looked += 1
        return expiry(self, default)

    monkeypatch.setattr(Record, "expiry", counting)
    assert log.sweep(NOW) == 1 and "old" not in log.records and "both" in log.records
    assert looked <= 5  # the two expired entries' keys, not the 1,000 live ones
    assert log.sweep(NOW + 60) == 1 and "both" not in log.records
    assert log.sweep(NOW + 600) == 1_000 and log.records == {}
