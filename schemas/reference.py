"""Reference data as events: accounts (with their plan limits), API keys, domains and
suppressions. Each lives on a compacted topic keyed by the entity, and each event carries the
entity's whole current state, so the latest record per key *is* the state and a view rebuilt
from the log is exact. A removed suppression is a tombstone (a null value)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from schemas.events import Event


class Plan(BaseModel):
    """What an account may do. Carried on the account, so a plan change is one event."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    max_recipients: int = Field(ge=1, description="Recipients per message (to+cc+bcc).")
    max_message_bytes: int = Field(ge=1, description="Raw message size, attachments included.")
    max_horizon_seconds: int = Field(ge=0, description="How far ahead a send may be scheduled.")
    scheduling_allowed: bool = Field(description="Whether sends may be scheduled at all.")


class AccountState(Event):
    """An account as it is now. Key: account id."""

    type: Literal["account"] = "account"
    schema_version: Literal[1] = 1
    name: str
    status: Literal["active", "disabled"]
    plan: Plan
    created_at: datetime
    time_zone: str | None = Field(
        default=None,
        description="IANA time zone for times that name none (Resend's natural-language "
        "scheduled_at) and the default zone of local-time sends (sendAt.local); UTC when unset.",
    )
    list_unsubscribe: bool | None = Field(
        default=None,
        description="Add RFC 8058 one-click unsubscribe headers to the account's "
        "single-recipient messages unless a submission says otherwise; off when unset.",
    )


class ApiKeyState(Event):
    """An API key as it is now. Key: the key's SHA-256 (hex). The key itself is never stored
    or published: only its hash and a short, non-secret id to name it by."""

    type: Literal["api_key"] = "api_key"
    schema_version: Literal[1] = 1
    key_id: str = Field(description="Public id of the key (its first characters).")
    key_sha256: str = Field(description="SHA-256 of the key, hex.")
    status: Literal["active", "revoked"]
    created_at: datetime


class DomainState(Event):
    """A sending domain of an account. Key: ``account_id/domain``."""

    type: Literal["domain"] = "domain"
    schema_version: Literal[1] = 1
    domain: str
    verified: bool
    changed_at: datetime = Field(description="When ``verified`` last changed.")


SuppressionReason = Literal["hard_bounce", "complaint", "unsubscribe", "manual"]


class SuppressionState(Event):
    """An address the account must not send to. Key: ``account_id/address``; removing it
    publishes a tombstone."""

    type: Literal["suppression"] = "suppression"
    schema_version: Literal[1] = 1
    address: str
    reason: SuppressionReason
    added_at: datetime
    message_id: str | None = Field(
        default=None,
        description="The message it came from (the one whose unsubscribe link was used, or "
        "that bounced), if any.",
    )


class BatchState(Event):
    """A batch id of an account (SendGrid's ``POST /v3/mail/batch``) and the scheduled-send
    status set on it (``pause`` or ``cancel``; none when unset). Key: the batch id."""

    type: Literal["batch_state"] = "batch_state"
    schema_version: Literal[1] = 1
    batch_id: str
    status: Literal["pause", "cancel"] | None = Field(
        default=None, description="The scheduled-send status of the batch, if any."
    )
    created_at: datetime


def domain_key(account_id: str, domain: str) -> str:
    """The topic key of a domain."""
    return f"{account_id}/{domain.lower()}"


def suppression_key(account_id: str, address: str) -> str:
    """The topic key of a suppression."""
    return f"{account_id}/{address.lower()}"
