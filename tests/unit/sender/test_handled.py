"""The sender's handled set keeps what the dedupe window needs, and no more."""

from __future__ import annotations

from services.sender.handled import HandledAttempts


def test_entries_leave_after_the_window() -> None:
    handled = HandledAttempts(window=3600)
    for i in range(1000):
        handled.add((f"m{i}", 1), now=1_000_000 + i)
    assert ("m0", 1) in handled and len(handled) == 1000
    handled.add(("late", 1), now=1_000_000 + 3600 + 500)
    assert ("m0", 1) not in handled and ("m499", 1) not in handled
    assert ("m500", 1) in handled and ("late", 1) in handled
    assert len(handled) == 501


def test_bounded_under_a_steady_rate() -> None:
    handled = HandledAttempts(window=60)
    for i in range(100_000):
        handled.add((f"m{i}", 1), now=i / 100)  # 100 per second
    assert len(handled) <= 60 * 100 + 1


def test_a_re_read_counts_from_now() -> None:
    handled = HandledAttempts(window=10)
    handled.update([("a", 1), ("b", 2)], now=100)
    assert ("a", 1) in handled and ("b", 2) in handled
    handled.prune(now=111)
    assert len(handled) == 0
