"""Admin commands and the reference state (pure): codes, statuses, no clear keys."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from schemas.codec import encode
from services.reference import commands as cmd
from services.reference.commands import RefError
from services.reference.view import ReferenceState, key_hash

NOW = datetime(2026, 11, 23, tzinfo=UTC)


def apply(state: ReferenceState, records: list[cmd.Record]) -> None:
    for r in records:
        state.apply(r.topic, r.key, encode(r.value) if r.value is not None else None)


def seeded() -> tuple[ReferenceState, str, str]:
    state = ReferenceState()
    records, account, key = cmd.create_account(state, "Acme", "pro", "Acme.Test", True, NOW)
    apply(state, records)
    return state, account, key


def test_create_account_publishes_no_clear_key() -> None:
    state, account, key = seeded()
    assert state.authenticate(key) is not None
    assert state.authenticate(key).account_id == account  # type: ignore[union-attr]
    assert key_hash(key) in state.keys
    assert all(key not in str(v.model_dump()) for v in state.keys.values())
    assert state.domain_verified(account, "acme.test")


@pytest.mark.parametrize(
    ("call", "status", "code"),
    [
        (lambda s, a: cmd.create_account(s, "Acme", None, None, False, NOW), 409, "ACCOUNT_EXISTS"),
        (lambda s, a: cmd.create_account(s, "New", "gold", None, False, NOW), 400, "UNKNOWN_PLAN"),
        (
            lambda s, a: cmd.create_account(s, "New", None, "bad domain", False, NOW),
            400,
            "INVALID_DOMAIN",
        ),
        (lambda s, a: cmd.set_status(s, "acc_x", "disabled", NOW), 404, "ACCOUNT_NOT_FOUND"),
        (lambda s, a: cmd.add_domain(s, a, "ACME.test", False, NOW), 409, "DOMAIN_EXISTS"),
        (lambda s, a: cmd.set_verified(s, a, "other.test", True, NOW), 404, "DOMAIN_NOT_FOUND"),
        (
            lambda s, a: cmd.add_suppression(s, a, "no-at-sign", "manual", NOW),
            400,
            "INVALID_ADDRESS",
        ),
        (lambda s, a: cmd.remove_suppression(s, a, "x@y.test"), 404, "SUPPRESSION_NOT_FOUND"),
        (lambda s, a: cmd.revoke_key(s, "kai_unknown", NOW), 404, "KEY_NOT_FOUND"),
    ],
)
def test_refusals_have_stable_codes(call: object, status: int, code: str) -> None:
    state, account, _ = seeded()
    before = state.snapshot()
    with pytest.raises(RefError) as err:
        call(state, account)  # type: ignore[operator]
    assert (err.value.status, err.value.code) == (status, code)
    assert state.snapshot() == before, "nothing half-applied"


def test_revoke_disable_downgrade_and_suppressions() -> None:
    state, account, key = seeded()
    apply(state, [cmd.revoke_key(state, key[:12], NOW)])
    assert state.authenticate(key) is None
    record, second = cmd.create_key(state, account, NOW)
    apply(state, [record, cmd.set_plan(state, account, "free", NOW)])
    assert state.authenticate(second) is not None
    assert state.account(account).plan.name == "free"  # type: ignore[union-attr]
    apply(state, [cmd.add_suppression(state, account, "Bob@Example.org", "complaint", NOW)])
    assert state.suppression_reason(account, "bob@example.org") == "complaint"
    apply(state, [cmd.remove_suppression(state, account, "bob@example.org")])
    assert state.suppression_reason(account, "bob@example.org") is None
    apply(state, [cmd.set_status(state, account, "disabled", NOW)])
    assert state.account(account).status == "disabled"  # type: ignore[union-attr]
