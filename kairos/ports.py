"""Free local ports below Linux's ephemeral range.

A port in the ephemeral range (32768-60999 by default) can be taken at any moment by a client's
outgoing connection, even one connecting to itself while it retries a broker that is down; a
listener that must come back on the same port (a restarted broker) then cannot. So the ports
Kairos picks for its own listeners come from below that range.
"""

from __future__ import annotations

import random
import socket

#: the range free ports are drawn from: above the well-known services, below the ephemeral range
LOW, HIGH = 20000, 32000


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free on ``host`` a moment ago, in ``[LOW, HIGH)``."""
    for _ in range(500):
        port = random.randrange(LOW, HIGH)
        with socket.socket() as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            return port
    raise OSError(f"no free port in [{LOW}, {HIGH}) on {host}")
