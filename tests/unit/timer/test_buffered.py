"""The write-back cache the timer's agent folds a batch into."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from services.timer.buffered import Buffered

KEYS = st.sampled_from([b"a", b"b", b"c", b"d"])
OPS = st.lists(
    st.tuples(st.sampled_from(["set", "del", "pop", "get"]), KEYS, st.binary(max_size=3)),
    max_size=40,
)


class Counting(dict[bytes, bytes]):
    """A dict that counts writes (a faust table's changelog records)."""

    writes = 0

    def __setitem__(self, key: bytes, value: bytes) -> None:
        self.writes += 1
        super().__setitem__(key, value)

    def __delitem__(self, key: bytes) -> None:
        self.writes += 1
        super().__delitem__(key)


@given(st.dictionaries(KEYS, st.binary(max_size=3)), OPS)
def test_a_flushed_buffer_equals_writing_through(start: dict[bytes, bytes], ops: list) -> None:
    direct, backing = dict(start), Counting(start)
    buffered = Buffered(backing)
    for op, key, value in ops:
        for store in (direct, buffered):
            if op == "set":
                store[key] = value
            elif op == "del" and key in store:
                del store[key]
            elif op == "pop":
                store.pop(key, None)
            assert store.get(key) == direct.get(key)
    assert dict(buffered.items()) == direct
    assert backing.writes == 0  # nothing reaches the table before the flush
    buffered.flush()
    assert dict(backing) == direct
    assert backing.writes <= len({k for _, k, _ in ops})  # each changed key written once


def test_many_appends_to_one_key_are_one_write() -> None:
    backing = Counting()
    buffered = Buffered(backing)
    for _ in range(500):
        buffered[b"chunk"] = (buffered.get(b"chunk") or b"") + b"x"
    buffered.flush()
    assert backing == {b"chunk": b"x" * 500} and backing.writes == 1
