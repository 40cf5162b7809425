"""A write-back cache over a table, for one batch of stream events.

The timer folds a batch of schedule-stream events into its state, then writes each changed key
once: a second's index chunk that 500 new messages append to is written once, not 500 times,
and so is its changelog record. Reads see the batch's own writes. Nothing reaches the table
until the batch's :meth:`Buffered.changes` are written (:mod:`services.timer.changelog`), after
every event of the batch has been handled and everything it fired acknowledged (so forgetting
still follows publishing).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, MutableMapping

Store = MutableMapping[bytes, bytes]


class Buffered(MutableMapping[bytes, bytes]):
    """``backing`` seen through a cache of reads and pending writes (``None``: deleted).

    ``reads``: where to read from, when not ``backing`` itself. A faust table's own read asks
    its store twice (whether the key is there, then its value: a table has default values);
    the timer reads through the table's store (``table.data``), once."""

    def __init__(self, backing: Store, reads: Mapping[bytes, bytes] | None = None) -> None:
        self.backing = backing
        self._reads: Mapping[bytes, bytes] = backing if reads is None else reads
        self._cache: dict[bytes, bytes | None] = {}
        self._dirty: set[bytes] = set()

    def __getitem__(self, key: bytes) -> bytes:
        if key in self._cache:
            value = self._cache[key]
        else:
            value = self._reads.get(key)
            self._cache[key] = value
        if value is None:
            raise KeyError(key)
        return value

    def get(self, key: bytes, default: bytes | None = None) -> bytes | None:  # type: ignore[override]
        try:
            return self[key]
        except KeyError:
            return default

    def __contains__(self, key: object) -> bool:
        return isinstance(key, bytes) and self.get(key) is not None

    def __setitem__(self, key: bytes, value: bytes) -> None:
        self._cache[key] = value
        self._dirty.add(key)

    def __delitem__(self, key: bytes) -> None:
        if self.get(key) is None:
            raise KeyError(key)
        self._cache[key] = None
        self._dirty.add(key)

    def pop(self, key: bytes, default: bytes | None = None) -> bytes | None:  # type: ignore[override]
        value = self.get(key)
        if value is None:
            return default
        self._cache[key] = None
        self._dirty.add(key)
        return value

    def __iter__(self) -> Iterator[bytes]:
        seen = set()
        for key in self.backing:
            seen.add(key)
            if self.get(key) is not None:
                yield key
        for key, value in list(self._cache.items()):
            if key not in seen and value is not None:
                yield key

    def __len__(self) -> int:
        return sum(1 for _ in self)

    @property
    def pending_writes(self) -> int:
        return len(self._dirty)

    def changes(self) -> list[tuple[bytes, bytes | None]]:
        """Every changed key once, with its new value (``None``: deleted). A delete is
        listed only for a key the store holds (one written and deleted within the batch
        never reached it). Then the batch starts anew: what was read stays cached."""
        out: list[tuple[bytes, bytes | None]] = []
        for key in self._dirty:
            value = self._cache[key]
            # a read (not ``in``): faust's RocksDB store then looks in the key's partition
            # only, where after ``in`` it looks in every partition's database it has open
            if value is not None or self._reads.get(key) is not None:
                out.append((key, value))
        self._dirty.clear()
        return out

    def flush(self) -> None:
        """Write every changed key to the backing store once (a delete as a delete)."""
        for key, value in self.changes():
            if value is None:
                del self.backing[key]
            else:
                self.backing[key] = value
