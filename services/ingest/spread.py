"""Spreading a submission's messages over time instead of sending them in one second (pure).

SendGrid's own advice is to avoid round times: 100,000 messages due at 09:00:00 are a spike
that the relay and the receiving providers throttle. ``deliverWithin`` spreads them evenly over
the window after the requested time; ``maxPerMinute`` caps their rate. Each message's place is
decided by its id alone (its rank among the submission's ids by a hash), so a retry of the
same submission, or a replay of the log, puts every message on the same second, and no message
is ever due before the time it asked for.
"""

from __future__ import annotations

import hashlib
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from services.ingest.compose import SubmitError

#: The longest window a submission may be spread over (one day).
MAX_WINDOW_SECONDS = 86400


@dataclass(frozen=True)
class Spread:
    """How to spread a submission: over ``within`` seconds, at most ``per_minute`` messages
    a minute (either or both; with both, the longer of the two windows)."""

    within: int | None = None
    per_minute: int | None = None

    def window(self, count: int) -> int:
        """The seconds ``count`` messages due in the same second are spread over."""
        needed = math.ceil(count * 60 / self.per_minute) if self.per_minute else 0
        return max(self.within or 0, needed)

    def offsets(self, ids: Sequence[str], dues: Sequence[int]) -> list[int]:
        """Seconds to add to each message's due second: the messages due in the same second
        are ordered by a hash of their ids and placed evenly over the window (message ``i`` of
        ``n`` at ``i * window // n``); all offsets are ``>= 0`` and ``< window``, and no 60
        seconds hold more than ``per_minute`` of them."""
        groups: dict[int, list[int]] = defaultdict(list)
        for index, due in enumerate(dues):
            groups[due].append(index)
        out = [0] * len(ids)
        for members in groups.values():
            window = self.window(len(members))
            ranked = sorted(members, key=lambda i: hashlib.sha256(ids[i].encode()).digest())
            for rank, index in enumerate(ranked):
                out[index] = rank * window // len(members)
        return out


def _seconds(value: Any, field: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise SubmitError("INVALID_SPREAD", f"a whole number from {low} to {high}", field)
    return value


def read_spread(within: Any, per_minute: Any, fields: tuple[str, str]) -> Spread | None:
    """``deliverWithin`` (seconds, 1 to a day) and ``maxPerMinute`` (1 to 1,000,000) as a
    request gave them (None when absent) read into a :class:`Spread`; SubmitError
    ``INVALID_SPREAD`` for anything else."""
    if within is None and per_minute is None:
        return None
    return Spread(
        _seconds(within, fields[0], 1, MAX_WINDOW_SECONDS) if within is not None else None,
        _seconds(per_minute, fields[1], 1, 1_000_000) if per_minute is not None else None,
    )
