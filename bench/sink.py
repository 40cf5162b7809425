"""A counting SMTP sink in its own process (so it does not share a core with the measuring):
``python -m bench.sink PORT COUNT_FILE`` accepts everything and writes the count to the file
twice a second."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller


class Counter:
    def __init__(self) -> None:
        self.count = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.count += 1
        return "250 2.0.0 Ok"


def main() -> None:
    port, path = int(sys.argv[1]), Path(sys.argv[2])
    counter = Counter()
    controller = Controller(counter, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        while True:
            path.write_text(str(counter.count))
            time.sleep(0.5)
    finally:
        controller.stop()


if __name__ == "__main__":
    main()
