"""Event models. Every event is a frozen pydantic model inside a versioned envelope.

Compatibility rules (what a consumer may rely on):

* ``type`` and ``schema_version`` together name the shape of an event. A change that would break
  an existing consumer (removing or renaming a field, changing a type or meaning) gets a new
  ``schema_version``; adding an optional field does not.
* Times: ``occurred_at`` and the other ``*_at`` datetimes are RFC 3339 strings in UTC;
  ``due_at`` is whole unix seconds (the second the sender asked for); durations are milliseconds.
* Ids are strings; message ids are UUIDs.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field


def new_event_id() -> str:
    """A fresh event id (UUID4 string)."""
    return str(uuid.uuid4())


class Event(BaseModel):
    """The envelope every event carries."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    event_id: str = Field(default_factory=new_event_id, description="Unique id of this event.")
    type: str = Field(description="What happened; with schema_version, the shape of the event.")
    schema_version: int = Field(description="Version of this event type's shape.")
    occurred_at: datetime = Field(description="When the event was produced (UTC).")
    account_id: str = Field(description="The account the event belongs to.")


class MessageEvent(Event):
    """An event about one message."""

    message_id: str = Field(description="The message (scheduling) id returned at submission.")
    traceparent: str | None = Field(
        default=None,
        exclude_if=lambda v: v is None,  # not written at all for a message that is not traced
        description="W3C trace context of the step that wrote this event (its span), when the "
        "message is traced: the submission's own traceparent header, or a new trace.",
    )


# -- content ----------------------------------------------------------------------------------


class MessageContent(BaseModel):
    """The message as it will be relayed: its SMTP envelope and RFC 5322 text."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    mail_from: str = Field(description="Envelope sender (MAIL FROM).")
    rcpt_to: list[str] = Field(min_length=1, description="Envelope recipients (RCPT TO).")
    from_domain: str = Field(description="Domain of the From address, checked for ownership.")
    mime: str = Field(description="The RFC 5322 message, encoded as mime_encoding says.")
    mime_encoding: Literal["utf-8", "base64"] = Field(
        default="utf-8", description="utf-8: mime is the text itself; base64: of the raw bytes."
    )
    size: int = Field(ge=0, description="Size of the raw message in bytes.")
    list_unsubscribe: bool = Field(
        default=False,
        exclude_if=lambda v: not v,  # not written at all when off
        description="Add RFC 8058 one-click unsubscribe headers (List-Unsubscribe, "
        "List-Unsubscribe-Post) when sending; its one recipient's link suppresses them.",
    )

    def raw(self) -> bytes:
        """The raw message bytes."""
        if self.mime_encoding == "base64":
            import base64

            return base64.b64decode(self.mime)
        return self.mime.encode("utf-8")


# -- the schedule stream (timer input) --------------------------------------------------------


class Scheduled(MessageEvent):
    """A message accepted for (later or immediate) delivery."""

    type: Literal["scheduled"] = "scheduled"
    schema_version: Literal[2] = 2
    due_at: int = Field(ge=0, description="Unix second at (not before) which it is due.")
    submitted_at: datetime = Field(description="When the submission was accepted.")
    source: Literal["http", "smtp", "sendgrid", "resend", "mailgun", "retry"] = Field(
        description="How it came in: the front door (v2 added resend and mailgun), or retry."
    )
    batch_id: str | None = Field(default=None, description="Batch the message belongs to.")
    attempt: int = Field(default=1, ge=1, description="Delivery attempt this schedule is for.")
    accept_by: datetime | None = Field(
        default=None,
        description="The submitter was told no unless this was appended to the schedule "
        "stream by then (broker append time): the timer withdraws it when appended later.",
    )
    content: MessageContent


class CancelRequested(MessageEvent):
    """Cancel one pending message."""

    type: Literal["cancel"] = "cancel"
    schema_version: Literal[1] = 1


class RescheduleRequested(MessageEvent):
    """Move one pending message to another due second."""

    type: Literal["reschedule"] = "reschedule"
    schema_version: Literal[1] = 1
    due_at: int = Field(ge=0, description="The new due unix second.")


class PauseRequested(MessageEvent):
    """Hold one pending message until it is resumed."""

    type: Literal["pause"] = "pause"
    schema_version: Literal[1] = 1


class ResumeRequested(MessageEvent):
    """Release a paused message (due at once if its due second has passed)."""

    type: Literal["resume"] = "resume"
    schema_version: Literal[1] = 1


class Tick(BaseModel):
    """Internal: the passage of time, written into one partition of the schedule stream.

    The timer decides what is due only when it processes a tick, using the tick's ``now``, so
    replaying the stream replays its decisions.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: Literal["tick"] = "tick"
    schema_version: Literal[1] = 1
    partition: int = Field(ge=0, description="The partition this tick was written to.")
    now: float = Field(description="Unix time (seconds, fractional) when the tick was made.")


class BatchCommand(Event):
    """Cancel, pause or resume every message of a batch.

    A batch's messages are spread over all partitions, so the command is written once into
    every partition of the schedule stream (keyed by batch id, explicit partition); each timer
    partition applies it to its own messages, in order with everything else it processes.
    """

    type: Literal["batch"] = "batch"
    schema_version: Literal[1] = 1
    batch_id: str = Field(description="The batch.")
    action: Literal["cancel", "pause", "resume"]
    partition: int = Field(ge=0, description="The partition this copy was written to.")


ScheduleStreamEvent = Annotated[
    Scheduled
    | CancelRequested
    | RescheduleRequested
    | PauseRequested
    | ResumeRequested
    | BatchCommand
    | Tick,
    Field(discriminator="type"),
]


# -- due and dispatch -------------------------------------------------------------------------


class ContentRef(BaseModel):
    """Where a message's content is: its ``scheduled`` event in the schedule stream (the
    claim check). The stream keeps it longer than a message can be pending."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    partition: int = Field(ge=0, description="Partition of the schedule stream.")
    offset: int = Field(ge=0, description="Offset of the scheduled event in that partition.")


class _Ready(MessageEvent):
    due_at: int = Field(ge=0, description="The due unix second.")
    attempt: int = Field(ge=1, description="Delivery attempt (1 for the first).")
    batch_id: str | None = None
    submitted_at: datetime
    emitted_at: datetime = Field(description="When the timer emitted the due event.")
    lateness_ms: int = Field(ge=0, description="emitted_at minus the due second, in ms.")
    content: MessageContent = Field(
        description="Envelope and size; its mime is empty when content_ref is set (v2)."
    )
    content_ref: ContentRef | None = Field(
        default=None,
        exclude_if=lambda v: v is None,  # not written at all for an inline text
        description="Where the message text is (v2): the scheduled event whose content.mime "
        "the sender relays. None: content.mime is the text itself.",
    )


class Due(_Ready):
    """A message whose due second has come. (message_id, attempt) identifies a repeat.

    v2: the message text travels by reference (``content_ref``), not in the event."""

    type: Literal["due"] = "due"
    schema_version: Literal[2] = 2


class Dispatch(_Ready):
    """A due message that passed send-time validation and may be delivered.

    v2: the message text travels by reference (``content_ref``), not in the event."""

    type: Literal["dispatch"] = "dispatch"
    schema_version: Literal[2] = 2
    validated_at: datetime


# -- outcomes (kairos.outcomes, read by analytics) --------------------------------------------


class _Outcome(MessageEvent):
    attempt: int = Field(ge=1, description="Delivery attempt the outcome is for.")
    due_at: int = Field(ge=0, description="The due unix second of the message.")
    batch_id: str | None = Field(default=None, description="Batch of the message, if any.")
    recipients: list[str] = Field(default_factory=list, description="Envelope recipients.")


class RecipientRefusal(BaseModel):
    """A recipient the relay refused while accepting the message for others."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    address: str
    smtp_code: int
    enhanced_status: str | None = None
    text: str = ""


class Delivered(_Outcome):
    """The relay accepted the message (for every recipient not listed in ``refused``)."""

    type: Literal["delivered"] = "delivered"
    schema_version: Literal[1] = 1
    delivered_at: datetime
    lateness_ms: int = Field(ge=0, description="delivered_at minus the due second, in ms.")
    smtp_code: int = Field(description="The relay's reply code to DATA (250).")
    smtp_text: str = Field(description="The relay's reply text.")
    refused: list[RecipientRefusal] = Field(
        default_factory=list, description="Recipients the relay refused (the others got it)."
    )


class Deferred(_Outcome):
    """A transient failure; another attempt is scheduled at retry_at."""

    type: Literal["deferred"] = "deferred"
    schema_version: Literal[1] = 1
    smtp_code: int | None = Field(default=None, description="Reply code, if the relay answered.")
    enhanced_status: str | None = Field(default=None, description="e.g. 4.2.1")
    text: str = Field(description="What went wrong.")
    retry_at: int = Field(description="Unix second of the next attempt.")


FailureStage = Literal["submit", "timer", "validation", "delivery"]


class Failed(_Outcome):
    """A terminal failure: the message was not and will not be delivered."""

    type: Literal["failed"] = "failed"
    schema_version: Literal[1] = 1
    stage: FailureStage = Field(description="Where it failed.")
    reason: str = Field(
        description="Stable reason code, e.g. domain_unverified, recipient_suppressed, "
        "account_disabled, plan_insufficient, smtp_permanent, retries_exhausted, expired."
    )
    smtp_code: int | None = None
    enhanced_status: str | None = None
    text: str = Field(default="", description="Human-readable detail.")


class Cancelled(_Outcome):
    """The message was cancelled before it was due."""

    type: Literal["cancelled"] = "cancelled"
    schema_version: Literal[1] = 1
    scope: Literal["message", "batch", "withdrawn"] = Field(
        description="Cancelled by id or by batch, or withdrawn: a submission that was refused "
        "(not durable in time) and written late."
    )


class CommandRejected(MessageEvent):
    """A lifecycle command the timer could not apply (not a terminal outcome): the message is
    unknown, already due, or already cancelled."""

    type: Literal["rejected"] = "rejected"
    schema_version: Literal[1] = 1
    command: Literal["cancel", "reschedule", "pause", "resume"]
    reason: str = Field(description="Stable reason code, e.g. not_pending.")


Outcome = Annotated[
    Delivered | Deferred | Failed | Cancelled | CommandRejected, Field(discriminator="type")
]


# -- dead letters (kairos.dead-letter) ---------------------------------------------------------


class DeadLetter(BaseModel):
    """A record a stage could not decode or process, kept with where it came from so it can be
    inspected and replayed (``kairos dead-letter``) once the cause is fixed."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    event_id: str = Field(default_factory=new_event_id, description="Unique id of this event.")
    type: Literal["dead_letter"] = "dead_letter"
    schema_version: Literal[1] = 1
    occurred_at: datetime = Field(description="When the stage gave up on the record (UTC).")
    stage: str = Field(description="The service that could not handle it, e.g. validator.")
    reason: str = Field(description="Stable reason code: undecodable or unprocessable.")
    error: str = Field(description="What went wrong (truncated to 1,000 characters).")
    origin_topic: str = Field(description="Full name of the topic the record was read from.")
    origin_partition: int = Field(ge=0)
    origin_offset: int = Field(ge=0)
    key: str | None = Field(description="The record's key, base64.")
    value: str | None = Field(description="The record's value, base64.")


def utcnow_from(ts: float) -> datetime:
    """A UTC datetime from unix seconds."""
    return datetime.fromtimestamp(ts, tz=UTC)
