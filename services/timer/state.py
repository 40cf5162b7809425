"""The timer's pure state machine over two key-value stores (faust tables in production,
dicts in unit tests). No I/O and no clock: every call takes ``now``.

Layout (all keys bytes, values orjson):

* ``pending``: message id -> :class:`Entry` (the schedule, its due second and status).
* ``index``: the ids due in each second as a chunked, append-only list:
  ``p{partition}:{second}`` -> ``[closed chunks, [ids of the open chunk]]`` and
  ``p{partition}:{second}:{i}`` -> the ``i``-th closed chunk of 64 ids. Adding a message is one
  read and (mostly) one write, and a second holding 100,000 messages is ~1,600 small values,
  never one giant value rewritten. Batch members are kept the same way
  (``p{partition}:bm:{batch}``), batch states as ``p{partition}:batch:{batch}``.
  ``p{partition}:cursor`` -> the :class:`Cursor` (next second and slot still to walk).

Dispatch walks the index forward from the cursor to the tick's ``now`` and returns what is due;
the caller publishes it, waits for the broker's acknowledgement, and only then calls
:meth:`TimerState.commit`, which deletes the slots and advances the cursor. A crash between
the two re-emits (at least once, same message id and attempt); it never loses a message.

Invariants: a message is emitted only when the walk reaches a second ``<= floor(now)`` or when
its due second is already behind the cursor, so never before its due second.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, MutableMapping
from dataclasses import dataclass, field
from typing import Literal

import orjson

from schemas.events import Scheduled

Store = MutableMapping[bytes, bytes]

#: SendGrid discards a paused message 72 h after its send time.
PAUSE_EXPIRY_SECONDS = 72 * 3600

Status = Literal["scheduled", "paused"]

#: Ids per chunk of a due second's list (and of a batch's member list).
CHUNK = 64


@dataclass
class Entry:
    """A pending message as the timer keeps it."""

    #: the encoded Scheduled event; its content's mime is empty when ``ref`` is set
    scheduled: bytes
    due: int
    attempt: int
    status: Status = "scheduled"
    batch_id: str | None = None
    #: set while paused: the second at which the pause expires
    expires: int | None = None
    #: (partition, offset) of the Scheduled event in the schedule stream, which holds its
    #: text (the claim check); None for an entry that holds its text itself
    ref: tuple[int, int] | None = None

    def encode(self) -> bytes:
        d = {
            "s": self.scheduled.decode(),
            "d": self.due,
            "a": self.attempt,
            "st": self.status,
            "b": self.batch_id,
            "x": self.expires,
        }
        if self.ref is not None:
            d["r"] = self.ref
        return orjson.dumps(d)

    @classmethod
    def decode(cls, raw: bytes) -> Entry:
        d = orjson.loads(raw)
        ref = d.get("r")
        return cls(
            scheduled=d["s"].encode(),
            due=d["d"],
            attempt=d["a"],
            status=d["st"],
            batch_id=d["b"],
            expires=d["x"],
            ref=None if ref is None else (ref[0], ref[1]),
        )


def by_reference(raw: bytes) -> bytes:
    """``raw`` (an encoded Scheduled event) without its message text: what the timer keeps
    when the schedule stream holds the text (claim check)."""
    obj = orjson.loads(raw)
    obj["content"]["mime"] = ""
    return orjson.dumps(obj)


@dataclass(frozen=True)
class Cursor:
    """Seconds before ``second`` are fully walked; in ``second``, slots before ``slot`` are."""

    second: int
    slot: int = 0


@dataclass(frozen=True)
class Fire:
    """A message the timer must act on now: publish a due event (``due``), or a terminal
    outcome (``expired``: paused for more than 72 h; ``cancelled``)."""

    message_id: str
    entry: Entry
    kind: Literal["due", "expired", "cancelled"]
    lateness: float  # seconds after the due second (for "due")
    scope: Literal["message", "batch", "withdrawn"] = "message"


@dataclass
class Walk:
    """What a walk found: messages to fire, slots to free, and the cursor after it."""

    fires: list[Fire] = field(default_factory=list)
    freed: list[bytes] = field(default_factory=list)
    cursor: Cursor | None = None
    complete: bool = True
    #: paused messages whose due second the walk passed: their 72 h expiry gets armed
    paused: list[tuple[str, Entry]] = field(default_factory=list)


@dataclass(frozen=True)
class Outcome:
    """What a command did: ``accepted`` with the fires it causes now, or ``rejected``."""

    accepted: bool
    reason: str = ""
    fires: tuple[Fire, ...] = ()
    entry: Entry | None = None


def _k(*parts: object) -> bytes:
    return ":".join(str(p) for p in parts).encode()


class TimerState:
    """The state of one partition of the timer."""

    def __init__(self, pending: Store, index: Store, partition: int) -> None:
        self.pending = pending
        self.index = index
        self.partition = partition

    # -- cursor --------------------------------------------------------------------------

    def cursor(self, now: float) -> Cursor:
        """The walk cursor; the first time, the current second (nothing is earlier)."""
        raw = self.index.get(_k(f"p{self.partition}", "cursor"))
        if raw is None:
            cur = Cursor(math.floor(now))
            self._set_cursor(cur)
            return cur
        d = orjson.loads(raw)
        return Cursor(d[0], d[1])

    def _set_cursor(self, cur: Cursor) -> None:
        self.index[_k(f"p{self.partition}", "cursor")] = orjson.dumps([cur.second, cur.slot])

    # -- index ---------------------------------------------------------------------------

    def _append(self, ns: bytes, item: str) -> None:
        """Append to the chunked list ``ns``: one read and (mostly) one write."""
        raw = self.index.get(ns)
        closed, open_ = orjson.loads(raw) if raw is not None else (0, [])
        open_.append(item)
        if len(open_) >= CHUNK:
            self.index[ns + b":" + str(closed).encode()] = orjson.dumps(open_)
            self.index[ns] = orjson.dumps([closed + 1, []])
        else:
            self.index[ns] = orjson.dumps([closed, open_])

    def _read(self, ns: bytes, start: int = 0) -> tuple[list[str], list[bytes]]:
        """The items of list ``ns`` from position ``start`` on, and every key the list uses."""
        raw = self.index.get(ns)
        if raw is None:
            return [], []
        closed, open_ = orjson.loads(raw)
        first = min(start // CHUNK, closed)
        items: list[str] = []
        for i in range(first, closed):
            items.extend(orjson.loads(self.index[ns + b":" + str(i).encode()]))
        items.extend(open_)
        keys = [ns, *(ns + b":" + str(i).encode() for i in range(closed))]
        return items[start - first * CHUNK :], keys

    def _second(self, second: int) -> bytes:
        return _k(f"p{self.partition}", second)

    def _add_slot(self, second: int, message_id: str) -> None:
        self._append(self._second(second), message_id)

    def _place(self, message_id: str, entry: Entry, at: int, now: float) -> tuple[Fire, ...]:
        """Index ``message_id`` at second ``at``, or fire it at once if the walk is past it."""
        cur = self.cursor(now)
        if at < cur.second:
            if self._paused(entry):
                return ()
            return (Fire(message_id, entry, "due", max(0.0, now - entry.due)),)
        self._add_slot(at, message_id)
        return ()

    # -- stream events -------------------------------------------------------------------

    def schedule(
        self,
        ev: Scheduled,
        raw: bytes,
        now: float,
        paused: bool = False,
        ref: tuple[int, int] | None = None,
    ) -> Outcome:
        """A new schedule (or a retry attempt). A repeat of a known attempt is ignored.
        With ``ref`` (where ``ev`` is in the schedule stream), only ``ev``'s envelope is kept:
        its text is read from there when it is sent."""
        known = self.pending.get(ev.message_id.encode())
        if known is not None:
            old = Entry.decode(known)
            if old.attempt >= ev.attempt:
                return Outcome(False, "duplicate", entry=old)
        entry = Entry(
            scheduled=raw if ref is None else by_reference(raw),
            due=ev.due_at,
            attempt=ev.attempt,
            batch_id=ev.batch_id,
            status="paused" if paused else "scheduled",
            ref=ref,
        )
        self.pending[ev.message_id.encode()] = entry.encode()
        if ev.batch_id is not None:
            if known is None:
                self._add_member(ev.batch_id, ev.message_id)
            if self.batch_status(ev.batch_id) == "cancelled":
                return Outcome(
                    True,
                    fires=(Fire(ev.message_id, entry, "cancelled", 0.0, "batch"),),
                    entry=entry,
                )
        fires = self._place(ev.message_id, entry, ev.due_at, now)
        if self._paused(entry) and ev.due_at < self.cursor(now).second:
            self._pause_expiry(ev.message_id, entry, now)
        return Outcome(True, fires=fires, entry=entry)

    def _get(self, message_id: str) -> Entry | None:
        raw = self.pending.get(message_id.encode())
        return Entry.decode(raw) if raw is not None else None

    def cancel(self, message_id: str, now: float) -> Outcome:
        """Cancel a pending message: a ``cancelled`` fire; once it is published,
        :meth:`forget` removes the message (its index slot is skipped when walked)."""
        entry = self._get(message_id)
        if entry is None:
            return Outcome(False, "not_pending")
        return Outcome(True, fires=(Fire(message_id, entry, "cancelled", 0.0),), entry=entry)

    # -- batches -------------------------------------------------------------------------

    def batch_status(self, batch_id: str | None) -> str:
        """``active``, ``paused`` or ``cancelled``, as this partition last heard."""
        if batch_id is None:
            return "active"
        raw = self.index.get(_k(f"p{self.partition}", "batch", batch_id))
        return raw.decode() if raw is not None else "active"

    def _members(self, batch_id: str) -> Iterator[tuple[str, Entry]]:
        ids, _keys = self._read(_k(f"p{self.partition}", "bm", batch_id))
        for mid in dict.fromkeys(ids):
            entry = self._get(mid)
            if entry is not None and entry.batch_id == batch_id:
                yield mid, entry

    def _add_member(self, batch_id: str, message_id: str) -> None:
        self._append(_k(f"p{self.partition}", "bm", batch_id), message_id)

    def _paused(self, entry: Entry) -> bool:
        return entry.status == "paused" or self.batch_status(entry.batch_id) == "paused"

    def batch(self, batch_id: str, action: str, now: float) -> Outcome:
        """Apply a batch command to this partition's messages of the batch.

        ``cancel``: every pending member fires ``cancelled`` (scope batch), and members
        scheduled later are cancelled on arrival. ``pause``: members wait when their second
        comes (for 72 h at most). ``resume``: members whose second has passed fire now."""
        status = self.batch_status(batch_id)
        key = _k(f"p{self.partition}", "batch", batch_id)
        if status == "cancelled":
            return Outcome(action == "cancel", "" if action == "cancel" else "batch_cancelled")
        if action == "cancel":
            self.index[key] = b"cancelled"
            fires = tuple(
                Fire(mid, e, "cancelled", 0.0, "batch") for mid, e in self._members(batch_id)
            )
            return Outcome(True, fires=fires)
        if action == "pause":
            self.index[key] = b"paused"
            return Outcome(True)
        self.index.pop(key, None)
        cursor = self.cursor(now).second
        due: list[Fire] = []
        for mid, entry in self._members(batch_id):
            if entry.status == "scheduled" and entry.due < cursor:
                due.append(Fire(mid, entry, "due", max(0.0, now - entry.due)))
        return Outcome(True, fires=tuple(due))

    def reschedule(self, message_id: str, due: int, now: float) -> Outcome:
        """Move a pending message to second ``due`` (fired at once if that is already past)."""
        entry = self._get(message_id)
        if entry is None:
            return Outcome(False, "not_pending")
        entry.due = due
        entry.expires = None
        self.pending[message_id.encode()] = entry.encode()
        fires = self._place(message_id, entry, due, now)
        if self._paused(entry) and due < self.cursor(now).second:
            self._pause_expiry(message_id, entry, now)
        return Outcome(True, fires=fires, entry=entry)

    def pause(self, message_id: str, now: float) -> Outcome:
        """Hold a pending message: walked past its due second, it waits, for 72 h at most."""
        entry = self._get(message_id)
        if entry is None:
            return Outcome(False, "not_pending")
        if entry.status == "paused":
            return Outcome(True, entry=entry)
        entry.status = "paused"
        self.pending[message_id.encode()] = entry.encode()
        return Outcome(True, entry=entry)

    def resume(self, message_id: str, now: float) -> Outcome:
        """Release a paused message; due at once if its second has passed."""
        entry = self._get(message_id)
        if entry is None:
            return Outcome(False, "not_pending")
        if entry.status != "paused":
            return Outcome(True, entry=entry)
        entry.status = "scheduled"
        overdue = entry.due < self.cursor(now).second
        entry.expires = None
        self.pending[message_id.encode()] = entry.encode()
        if overdue and not self._paused(entry):
            return Outcome(
                True, fires=(Fire(message_id, entry, "due", now - entry.due),), entry=entry
            )
        return Outcome(True, entry=entry)

    def _pause_expiry(self, message_id: str, entry: Entry, now: float) -> None:
        entry.expires = entry.due + PAUSE_EXPIRY_SECONDS
        self.pending[message_id.encode()] = entry.encode()
        self._add_slot(max(entry.expires, self.cursor(now).second), message_id)

    def _forget(self, message_id: str) -> None:
        self.pending.pop(message_id.encode(), None)

    def forget(self, fired: list[Fire]) -> None:
        """Drop fired messages from ``pending`` once their events are acknowledged."""
        for fire in fired:
            self._forget(fire.message_id)

    # -- the walk ------------------------------------------------------------------------

    def walk(self, now: float, limit: int = 5000) -> Walk:
        """Walk the index from the cursor to ``floor(now)``, collecting at most ``limit``
        fires. Read-only: nothing changes until :meth:`commit`. ``complete`` is False when
        the limit stopped the walk early (walk again after committing)."""
        target = math.floor(now)
        cur = self.cursor(now)
        out = Walk()
        second, slot = cur.second, cur.slot
        seen: set[str] = set()
        while second <= target:
            ids, keys = self._read(self._second(second), slot)
            for message_id in ids:
                if len(out.fires) >= limit:
                    out.cursor = Cursor(second, slot)
                    out.complete = False
                    return out
                slot += 1
                entry = self._get(message_id)
                if entry is None or message_id in seen:
                    continue  # cancelled, already fired, or a stale second slot
                seen.add(message_id)
                batch = self.batch_status(entry.batch_id)
                paused = entry.status == "paused" or batch == "paused"
                if batch == "cancelled":
                    out.fires.append(Fire(message_id, entry, "cancelled", 0.0, "batch"))
                elif not paused and entry.due == second:
                    out.fires.append(Fire(message_id, entry, "due", max(0.0, now - second)))
                elif paused and entry.expires == second:
                    out.fires.append(Fire(message_id, entry, "expired", now - entry.due))
                elif paused and entry.due == second:
                    out.paused.append((message_id, entry))
            out.freed.extend(keys)
            second, slot = second + 1, 0
        out.cursor = Cursor(second, 0)
        return out

    def commit(self, walk: Walk, now: float) -> None:
        """Apply a walk whose fires have been published: free its slots, forget what fired,
        arm the 72 h expiry of paused messages it passed, and advance the cursor."""
        for key in walk.freed:
            self.index.pop(key, None)
        self.forget(walk.fires)
        assert walk.cursor is not None
        self._set_cursor(walk.cursor)
        for message_id, entry in walk.paused:
            self._pause_expiry(message_id, entry, now)

    def pending_ids(self) -> Iterator[str]:
        """Every pending message id (a full scan; for tests and tooling)."""
        for key in self.pending:
            yield key.decode()
