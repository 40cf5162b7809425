"""One hop of the raw relay, in its own process as each Kairos service is:
``python -m bench.relay BOOTSTRAP SOURCE DESTINATION GROUP READY_FILE [GO_FILE]``.

Consumes SOURCE in consumer group GROUP and produces every record unchanged (same key, so the
same partition) to DESTINATION with the producer every Kairos service uses (acks=all,
idempotent), committing each batch after it is acknowledged, as the services do. No decoding,
no state: what is left is the cost of Kafka and of aiokafka. Touches READY_FILE once it has
its partitions; runs until SIGTERM.

With GO_FILE it joins its group and then waits for GO_FILE to appear: the file holds a wall-
clock time (seconds since the epoch) and the hop starts relaying at that time. So its input can
be written before its clock starts, and its clock started at a second given in advance, as the
pipeline's starts at the due second.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import time
from pathlib import Path

from kairos.kafka.clients import make_consumer, make_producer


def start_time(go: Path) -> float | None:
    """The wall-clock time in GO_FILE; None while it is absent or not written yet."""
    with contextlib.suppress(OSError, ValueError):
        return float(go.read_text())
    return None


async def relay(
    bootstrap: str, source: str, destination: str, group: str, ready: Path, go: Path | None
) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    consumer = make_consumer(bootstrap, group, source)
    producer = make_producer(bootstrap)
    await consumer.start()
    await producer.start()
    try:
        if go is not None:
            while not consumer.assignment() and not stop.is_set():
                await asyncio.sleep(0.05)
            ready.touch()
            while (at := start_time(go)) is None and not stop.is_set():
                await asyncio.sleep(0.01)
            if at is not None:
                await asyncio.sleep(max(0.0, at - time.time()))
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
    go = Path(sys.argv[6]) if len(sys.argv) > 6 else None
    asyncio.run(relay(bootstrap, source, destination, group, Path(ready), go))
