"""The Kairos event contract: event models, the topic registry, the codec, JSON Schemas.

This package imports no Kafka client, so an analytics team can depend on it alone.
"""

from schemas.codec import decode, decode_as, encode
from schemas.events import (
    BatchCommand,
    Cancelled,
    CancelRequested,
    CommandRejected,
    Deferred,
    Delivered,
    Dispatch,
    Due,
    Failed,
    MessageContent,
    Outcome,
    PauseRequested,
    RescheduleRequested,
    ResumeRequested,
    Scheduled,
    ScheduleStreamEvent,
    Tick,
)
from schemas.registry import TOPICS, TopicSpec, topic_spec

__all__ = [
    "TOPICS",
    "BatchCommand",
    "CancelRequested",
    "Cancelled",
    "CommandRejected",
    "Deferred",
    "Delivered",
    "Dispatch",
    "Due",
    "Failed",
    "MessageContent",
    "Outcome",
    "PauseRequested",
    "RescheduleRequested",
    "ResumeRequested",
    "ScheduleStreamEvent",
    "Scheduled",
    "Tick",
    "TopicSpec",
    "decode",
    "decode_as",
    "encode",
    "topic_spec",
]
