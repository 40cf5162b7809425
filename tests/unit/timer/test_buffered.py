"""The write-back cache the timer's agent folds a batch into."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

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


class Table(Counting):
    """A faust table as the timer meets it: its own reads ask its store twice (a table has
    default values: ``in``, then the value); ``data`` is the store, read once per ask."""

    def __init__(self, start: dict[bytes, bytes]) -> None:
        super().__init__(start)
        self.data = ReadCounting(self)
        self.asks = 0

    def get(self, key: bytes, default: bytes | None = None) -> bytes | None:  # type: ignore[override]
        self.asks += 2
        return super().get(key, default)


class ReadCounting(Mapping[bytes, bytes]):
    def __init__(self, table: Table) -> None:
        self.table = table

    def __getitem__(self, key: bytes) -> bytes:
        self.table.asks += 1
        return dict.__getitem__(self.table, key)

    def __iter__(self) -> Iterator[bytes]:
        return iter(dict(self.table))

    def __len__(self) -> int:
        return dict.__len__(self.table)


def test_reads_go_to_the_store_once_and_writes_to_the_table() -> None:
    table = Table({b"a": b"1", b"b": b"2"})
    buffered = Buffered(table, table.data)
    assert buffered.get(b"a") == b"1" and buffered.get(b"zz") is None
    assert table.asks == 2  # one each, not two
    del buffered[b"b"]
    buffered[b"c"] = b"3"
    buffered.flush()
    assert dict(table) == {b"a": b"1", b"c": b"3"} and table.writes == 2
