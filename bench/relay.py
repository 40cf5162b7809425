"""One hop of the raw relay, in its own process as each Kairos service is:
``python -m bench.relay BOOTSTRAP SOURCE DESTINATION GROUP READY_FILE``.

Consumes SOURCE in consumer group GROUP and produces every record unchanged (same key, so the
same partition) to DESTINATION with the producer every Kairos service uses (acks=all,
idempotent), committing each batch after it is acknowledged, as the services do. No decoding,
no state: what is left is the cost of Kafka and of aiokafka. Touches READY_FILE once it has
its partitions; runs until SIGTERM.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

from kairos.kafka.clients import make_consumer, make_producer


async def relay(bootstrap: str, source: str, destination: str, group: str, ready: Path) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    consumer = make_consumer(bootstrap, group, source)
    producer = make_producer(bootstrap)
    await consumer.start()
    await producer.start()
    try:
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=100, max_records=2000)
            if consumer.assignment() and not ready.exists():
                ready.touch()
            futures = [
                await producer.send(destination, r.value, key=r.key)
                for records in batch.values()
                for r in records
            ]
            if futures:
                await asyncio.gather(*futures)
                await consumer.commit()
    finally:
        await consumer.stop()
        await producer.stop()


if __name__ == "__main__":
    bootstrap, source, destination, group, ready = sys.argv[1:6]
    asyncio.run(relay(bootstrap, source, destination, group, Path(ready)))
