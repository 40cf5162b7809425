"""Admin commands (pure): validate a request against the current reference state and return
the records to publish, or raise :class:`RefError` with a stable code and HTTP status.
Nothing is published when a command is refused, so nothing is half-applied by a bad request."""

from __future__ import annotations

import re
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel

from schemas.reference import (
    AccountState,
    ApiKeyState,
    DomainState,
    SuppressionReason,
    SuppressionState,
    domain_key,
    suppression_key,
)
from services.reference.plans import DEFAULT_PLAN, PLANS
from services.reference.view import ReferenceState, key_hash

_DOMAIN = re.compile(r"^(?=.{1,253}$)(?!-)([a-z0-9-]{1,63}(?<!-)\.)+[a-z][a-z0-9-]{0,62}$")
_LOCAL = re.compile(r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}$")


class RefError(Exception):
    """A refused admin command."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.field = status, code, message, field


@dataclass(frozen=True)
class Record:
    """One record to publish: logical topic, key, value (None: a tombstone)."""

    topic: str
    key: str
    value: BaseModel | None


def normalize_domain(domain: str, field: str = "domain") -> str:
    d = domain.strip().lower().rstrip(".")
    if not _DOMAIN.match(d):
        raise RefError(400, "INVALID_DOMAIN", f"{domain!r} is not a domain name", field)
    return d


def normalize_address(address: str, field: str = "address") -> str:
    local, at, domain = address.strip().rpartition("@")
    if not at or not _LOCAL.match(local):
        raise RefError(400, "INVALID_ADDRESS", f"{address!r} is not an email address", field)
    return f"{local}@{normalize_domain(domain, field)}".lower()


def new_api_key() -> str:
    """A fresh API key: ``kai_`` and 256 random bits."""
    return "kai_" + secrets.token_urlsafe(32)


def key_record(account_id: str, api_key: str, now: datetime) -> Record:
    state = ApiKeyState(
        occurred_at=now,
        account_id=account_id,
        key_id=api_key[:12],
        key_sha256=key_hash(api_key),
        status="active",
        created_at=now,
    )
    return Record("api-keys", state.key_sha256, state)


def _account(state: ReferenceState, account_id: str) -> AccountState:
    account = state.account(account_id)
    if account is None:
        raise RefError(404, "ACCOUNT_NOT_FOUND", f"no account {account_id}", "account_id")
    return account


def _plan(name: str) -> str:
    if name not in PLANS:
        raise RefError(
            400, "UNKNOWN_PLAN", f"unknown plan {name!r}; plans: {sorted(PLANS)}", "plan"
        )
    return name


def create_account(
    state: ReferenceState,
    name: str,
    plan: str | None,
    domain: str | None,
    verified: bool,
    now: datetime,
    time_zone: str | None = None,
    list_unsubscribe: bool | None = None,
) -> tuple[list[Record], str, str]:
    """A new account with one API key (and optionally a domain). Returns the records, the
    account id and the API key (shown once, never stored in clear)."""
    if not name.strip():
        raise RefError(400, "INVALID_NAME", "an account needs a name", "name")
    if any(a.name == name for a in state.accounts.values()):
        raise RefError(409, "ACCOUNT_EXISTS", f"an account named {name!r} exists", "name")
    plan_name = _plan(plan or DEFAULT_PLAN)
    _check_zone(time_zone)
    norm_domain = normalize_domain(domain) if domain else None
    account_id = "acc_" + uuid.uuid4().hex[:12]
    account = AccountState(
        occurred_at=now,
        account_id=account_id,
        name=name,
        status="active",
        plan=PLANS[plan_name],
        created_at=now,
        time_zone=time_zone,
        list_unsubscribe=list_unsubscribe,
    )
    api_key = new_api_key()
    records = [Record("accounts", account_id, account), key_record(account_id, api_key, now)]
    if norm_domain:
        d = DomainState(
            occurred_at=now,
            account_id=account_id,
            domain=norm_domain,
            verified=verified,
            changed_at=now,
        )
        records.append(Record("domains", domain_key(account_id, norm_domain), d))
    return records, account_id, api_key


def _check_zone(time_zone: str | None) -> None:
    if time_zone is not None:
        try:
            ZoneInfo(time_zone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise RefError(
                400, "INVALID_TIME_ZONE", f"{time_zone!r} is not an IANA time zone", "time_zone"
            ) from exc


def set_settings(
    state: ReferenceState, account_id: str, changes: dict[str, object], now: datetime
) -> Record:
    """The account with ``changes`` to its settings (``time_zone``: its default zone, None
    for UTC; ``list_unsubscribe``); only the keys given change."""
    account = _account(state, account_id)
    unknown = sorted(set(changes) - {"time_zone", "list_unsubscribe"})
    if unknown:
        raise RefError(400, "INVALID_REQUEST", f"unknown setting {unknown[0]}", unknown[0])
    zone = changes.get("time_zone")
    if zone is not None and not isinstance(zone, str):
        raise RefError(400, "INVALID_TIME_ZONE", "an IANA time zone", "time_zone")
    _check_zone(zone)
    if changes.get("list_unsubscribe") is not None and not isinstance(
        changes["list_unsubscribe"], bool
    ):
        raise RefError(400, "INVALID_REQUEST", "true or false", "list_unsubscribe")
    updated = account.model_copy(update={**changes, "occurred_at": now})
    return Record("accounts", account_id, updated)


def set_status(state: ReferenceState, account_id: str, status: str, now: datetime) -> Record:
    account = _account(state, account_id)
    updated = account.model_copy(update={"status": status, "occurred_at": now})
    return Record("accounts", account_id, updated)


def set_plan(state: ReferenceState, account_id: str, plan: str, now: datetime) -> Record:
    account = _account(state, account_id)
    updated = account.model_copy(update={"plan": PLANS[_plan(plan)], "occurred_at": now})
    return Record("accounts", account_id, updated)


def create_key(state: ReferenceState, account_id: str, now: datetime) -> tuple[Record, str]:
    _account(state, account_id)
    api_key = new_api_key()
    return key_record(account_id, api_key, now), api_key


def revoke_key(state: ReferenceState, key_id: str, now: datetime) -> Record:
    for key in state.keys.values():
        if key.key_id == key_id or key.key_sha256 == key_hash(key_id):
            updated = key.model_copy(update={"status": "revoked", "occurred_at": now})
            return Record("api-keys", key.key_sha256, updated)
    raise RefError(404, "KEY_NOT_FOUND", f"no API key {key_id}", "key_id")


def add_domain(
    state: ReferenceState, account_id: str, domain: str, verified: bool, now: datetime
) -> Record:
    _account(state, account_id)
    d = normalize_domain(domain)
    if state.domain(account_id, d) is not None:
        raise RefError(409, "DOMAIN_EXISTS", f"{d} is already a domain of {account_id}", "domain")
    state_ = DomainState(
        occurred_at=now, account_id=account_id, domain=d, verified=verified, changed_at=now
    )
    return Record("domains", domain_key(account_id, d), state_)


def set_verified(
    state: ReferenceState, account_id: str, domain: str, verified: bool, now: datetime
) -> Record:
    _account(state, account_id)
    d = normalize_domain(domain)
    current = state.domain(account_id, d)
    if current is None:
        raise RefError(404, "DOMAIN_NOT_FOUND", f"{d} is not a domain of {account_id}", "domain")
    changed = now if current.verified != verified else current.changed_at
    updated = current.model_copy(
        update={"verified": verified, "changed_at": changed, "occurred_at": now}
    )
    return Record("domains", domain_key(account_id, d), updated)


def add_suppression(
    state: ReferenceState,
    account_id: str,
    address: str,
    reason: SuppressionReason,
    now: datetime,
    *,
    exists_ok: bool = False,
    message_id: str | None = None,
) -> Record:
    _account(state, account_id)
    a = normalize_address(address)
    if state.suppression(account_id, a) is not None and not exists_ok:
        raise RefError(409, "SUPPRESSION_EXISTS", f"{a} is already suppressed", "address")
    s = SuppressionState(
        occurred_at=now,
        account_id=account_id,
        address=a,
        reason=reason,
        added_at=now,
        message_id=message_id,
    )
    return Record("suppressions", suppression_key(account_id, a), s)


def remove_suppression(state: ReferenceState, account_id: str, address: str) -> Record:
    _account(state, account_id)
    a = normalize_address(address)
    if state.suppression(account_id, a) is None:
        raise RefError(404, "SUPPRESSION_NOT_FOUND", f"{a} is not suppressed", "address")
    return Record("suppressions", suppression_key(account_id, a), None)
