"""Every Prometheus metric Kairos exports, declared once. Each service serves them on
``/metrics`` (ingest on its HTTP port, the others on their health port).

* ``kairos_events_total{service, event}`` — events a service produced: ``scheduled`` (ingest),
  ``due``, ``cancelled``, ``expired``, ``rejected`` (timer), ``dispatched``, ``failed``
  (validator), ``delivered``, ``deferred``, ``failed`` (sender).
* ``kairos_submissions_rejected_total{source, code}`` — submissions refused, by error code.
* ``kairos_due_lateness_seconds`` — how long after its due second a message was emitted
  (timer) and relayed (``stage`` label: ``due`` or ``delivered``).
* ``kairos_consumer_lag{service, topic, partition}`` — records not yet consumed.
* ``kairos_timer_tick_seconds{partition}`` — the time of the last tick a timer partition
  applied (a partition whose value stops moving is not firing anything).
* ``kairos_relay_connections{state}`` — the sender's relay connections, ``busy`` or ``idle``.
* ``kairos_smtp_replies_total{class}`` — the relay's final replies, by class (``2xx``, ``4xx``,
  ``5xx``; ``unavailable`` for no reply at all).
* ``kairos_pending_messages{due_in_hours}`` — pending messages falling due in each of the next
  24 hours (``0``: within the hour; ingest, from its lifecycle projection).
* ``kairos_dead_letters_total{stage, reason}`` — records set aside (kairos.kafka.deadletter).
"""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import IllegalStateError
from prometheus_client import Counter, Gauge, Histogram

EVENTS = Counter(
    "kairos_events", "Events produced, by service and event type", ["service", "event"]
)
REJECTED = Counter(
    "kairos_submissions_rejected", "Submissions refused, by source and code", ["source", "code"]
)
LATENESS = Histogram(
    "kairos_due_lateness_seconds",
    "Seconds between a message's due second and its due event (stage=due) or its relay "
    "(stage=delivered)",
    ["stage"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1, 2, 5, 30, 60, 300),
)
LAG = Gauge(
    "kairos_consumer_lag",
    "Records behind the end of the partition",
    ["service", "topic", "partition"],
)


TICK = Gauge(
    "kairos_timer_tick_seconds",
    "Unix time of the last tick a timer partition applied",
    ["partition"],
)
RELAY_CONNECTIONS = Gauge(
    "kairos_relay_connections", "The sender's relay connections, busy or idle", ["state"]
)
SMTP_REPLIES = Counter(
    "kairos_smtp_replies", "The relay's final replies to messages, by class", ["class"]
)


def count(service: str, event: str, n: int = 1) -> None:
    """Add ``n`` to ``kairos_events_total{service, event}``."""
    EVENTS.labels(service, event).inc(n)


async def track_lag(service: str, consumer: AIOKafkaConsumer, every: float = 5.0) -> None:
    """Update ``kairos_consumer_lag`` for the consumer's assigned partitions, forever."""
    while True:
        for tp in consumer.assignment():
            highwater = consumer.highwater(tp)
            if highwater is None:
                continue
            try:
                position = await consumer.position(tp)
            except IllegalStateError:  # revoked meanwhile
                continue
            LAG.labels(service, tp.topic, str(tp.partition)).set(max(0, highwater - position))
        await asyncio.sleep(every)
