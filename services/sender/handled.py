"""The attempts a sender has handled, for as long as a repeat of them can arrive.

A repeat of a dispatch comes from a redelivery (a crash before the commit) or a timer that
re-emitted after its own crash: both within ``window`` seconds of the original. Older entries
are forgotten, so the set is bounded by the delivery rate times the window instead of growing
with every message ever sent.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable

Attempt = tuple[str, int]


class HandledAttempts:
    """(message id, attempt) pairs seen in the last ``window`` seconds; ``now`` is passed in."""

    def __init__(self, window: float) -> None:
        self.window = window
        self._seen: OrderedDict[Attempt, float] = OrderedDict()

    def __contains__(self, attempt: object) -> bool:
        return attempt in self._seen

    def __len__(self) -> int:
        return len(self._seen)

    def add(self, attempt: Attempt, now: float) -> None:
        self._seen[attempt] = now
        self._seen.move_to_end(attempt)
        self.prune(now)

    def update(self, attempts: Iterable[Attempt], now: float) -> None:
        for attempt in attempts:
            self._seen[attempt] = now
            self._seen.move_to_end(attempt)
        self.prune(now)

    def prune(self, now: float) -> None:
        """Forget what was added more than ``window`` seconds before ``now``."""
        horizon = now - self.window
        while self._seen:
            first, at = next(iter(self._seen.items()))
            if at >= horizon:
                return
            del self._seen[first]
