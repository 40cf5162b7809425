"""Publishing admin commands' records, durably, and waiting until this process's own view
reflects them (so the admin API reads its writes)."""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaProducer

from kairos.settings import KairosSettings
from schemas.codec import encode
from services.reference.commands import Record
from services.reference.view import ReferenceView


class ReferenceWriter:
    """Publishes reference records with the durable producer (acks=all)."""

    def __init__(
        self, producer: AIOKafkaProducer, settings: KairosSettings, view: ReferenceView
    ) -> None:
        self.producer, self.settings, self.view = producer, settings, view

    async def apply(self, records: list[Record]) -> None:
        """Publish ``records`` in order, wait for the broker, then for the view."""
        futures = []
        for r in records:
            value = encode(r.value) if r.value is not None else None
            futures.append(
                await self.producer.send(self.settings.topic(r.topic), value, key=r.key.encode())
            )
        await asyncio.gather(*futures)
        await self.view.wait_until(lambda v: all(_reflects(v, r) for r in records))


def _reflects(view: ReferenceView, record: Record) -> bool:
    return view.table(record.topic).get(record.key) == record.value
