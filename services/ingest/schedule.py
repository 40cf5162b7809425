"""Parsing of a requested send time (``scheduledAt``, ``X-Scheduled-At``, ``send_at``,
Resend's ``scheduled_at``, Mailgun's ``o:deliverytime``).

Pure: every function takes ``now`` and either returns whole unix seconds or raises
:class:`ScheduleError` with a stable code. A bad time is never turned into an immediate send.
"""

from __future__ import annotations

import email.utils
import math
import re
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta, timezone
from datetime import time as dt_time
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import dateparser

MAX_HORIZON_SECONDS = 30 * 24 * 3600

_RFC3339 = re.compile(
    r"^(?P<date>\d{4}-\d{2}-\d{2})[Tt](?P<time>\d{2}:\d{2}:\d{2})(?:\.(?P<frac>\d{1,9}))?"
    r"(?P<offset>[Zz]|[+-]\d{2}:\d{2})?$",
    re.ASCII,
)
_UNIX = re.compile(r"^\s*-?\d{1,12}\s*$", re.ASCII)


@dataclass(frozen=True)
class ScheduleError(ValueError):
    """A requested send time that cannot be honoured. ``code`` is stable; ``field`` names
    the input it came from."""

    code: str
    message: str
    field: str = "scheduledAt"

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


def parse_time(value: Any, field: str = "scheduledAt") -> int:
    """Parse a unix-seconds integer or an RFC 3339 string with an offset into unix seconds.

    Raises ScheduleError: ``SCHEDULED_AT_INVALID`` (not a time), ``SCHEDULED_AT_NO_OFFSET``
    (a date-time without ``Z`` or ``±hh:mm``), ``SCHEDULED_AT_FRACTIONAL`` (a part of a second;
    ``.000`` is a whole second and is accepted).
    """
    if isinstance(value, bool):
        raise ScheduleError("SCHEDULED_AT_INVALID", "must be unix seconds or RFC 3339", field)
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if not value.is_integer():
            raise ScheduleError(
                "SCHEDULED_AT_FRACTIONAL", "whole seconds only; got a fraction", field
            )
        return int(value)
    if not isinstance(value, str):
        raise ScheduleError("SCHEDULED_AT_INVALID", "must be unix seconds or RFC 3339", field)
    text = value.strip()
    if _UNIX.match(text):
        return int(text)
    if re.match(r"^\s*-?\d+\.\d+\s*$", text, re.ASCII):
        raise ScheduleError("SCHEDULED_AT_FRACTIONAL", "whole seconds only; got a fraction", field)
    match = _RFC3339.fullmatch(text)
    if match is None:
        raise ScheduleError(
            "SCHEDULED_AT_INVALID",
            f"{value!r} is neither unix seconds nor RFC 3339 (e.g. 2026-05-15T10:00:00Z)",
            field,
        )
    if match["offset"] is None:
        raise ScheduleError(
            "SCHEDULED_AT_NO_OFFSET", "a date-time needs an offset: Z or ±hh:mm", field
        )
    if match["frac"] is not None and int(match["frac"]) != 0:
        raise ScheduleError("SCHEDULED_AT_FRACTIONAL", "whole seconds only; got a fraction", field)
    offset = match["offset"]
    if offset in ("Z", "z"):
        tz = UTC
    else:
        sign = 1 if offset[0] == "+" else -1
        hours, minutes = int(offset[1:3]), int(offset[4:6])
        if hours > 23 or minutes > 59:
            raise ScheduleError("SCHEDULED_AT_INVALID", f"bad offset {offset!r}", field)
        tz = timezone(sign * timedelta(hours=hours, minutes=minutes))
    try:
        moment = datetime.fromisoformat(f"{match['date']}T{match['time']}").replace(tzinfo=tz)
        return int(moment.timestamp())
    except (ValueError, OverflowError) as exc:
        raise ScheduleError(
            "SCHEDULED_AT_INVALID", f"{text!r} is not a real date-time", field
        ) from exc


def check_window(
    due: int, now: float, horizon: int = MAX_HORIZON_SECONDS, field: str = "scheduledAt"
) -> int:
    """``due`` if it is in the future and at most ``horizon`` seconds out, else ScheduleError
    (``SCHEDULED_AT_IN_PAST``, ``SCHEDULED_AT_TOO_FAR``)."""
    if due <= now:
        raise ScheduleError(
            "SCHEDULED_AT_IN_PAST", f"{due} is not in the future (now {int(now)})", field
        )
    if due - now > horizon:
        raise ScheduleError(
            "SCHEDULED_AT_TOO_FAR",
            f"{due} is more than {horizon // 86400} days out",
            field,
        )
    return due


@dataclass(frozen=True)
class When:
    """A requested send time as a front door read it: parsed, not yet judged against ``now``
    (so that an idempotent retry can be answered after the time has passed). ``limit``: the
    front door's own horizon (SendGrid's 72 hours), before the plan's."""

    at: int
    field: str = "scheduledAt"
    limit: int = MAX_HORIZON_SECONDS

    def check(self, now: float, horizon: int) -> int:
        """The due second, if in the future and within ``horizon`` and this door's limit."""
        return check_window(self.at, now, min(horizon, self.limit), self.field)


def requested_at(body: dict[str, Any]) -> When | None:
    """The requested send time of a ``POST /email`` body, or None for an immediate send.

    ``scheduledAt`` and its alias ``scheduled_at`` may both be given only with the same
    time (``SCHEDULED_AT_CONFLICT`` otherwise). An explicit null is "no schedule".
    """
    present = [
        (name, body[name]) for name in ("scheduledAt", "scheduled_at") if body.get(name) is not None
    ]
    if not present:
        return None
    parsed = [(name, parse_time(value, name)) for name, value in present]
    if len({due for _, due in parsed}) > 1:
        raise ScheduleError(
            "SCHEDULED_AT_CONFLICT",
            "scheduledAt and scheduled_at name different times",
            "scheduled_at",
        )
    name, due = parsed[0]
    return When(due, name)


def resolve_scheduled_at(
    body: dict[str, Any], now: float, horizon: int = MAX_HORIZON_SECONDS
) -> int | None:
    """The due second of a body (see :func:`requested_at`), checked against ``now``."""
    when = requested_at(body)
    return None if when is None else when.check(now, horizon)


#: Longest natural-language time read (longer text is refused before any parsing).
MAX_NATURAL_LENGTH = 100


def zone_of(name: str | None) -> ZoneInfo:
    """The IANA zone ``name`` (UTC for None); ValueError when there is no such zone."""
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"{name!r} is not an IANA time zone") from exc


def parse_natural_time(
    value: Any, now: float, zone: str | None, field: str = "scheduled_at"
) -> int:
    """A time as Resend reads ``scheduled_at``: ISO 8601 (a part of a second rounds up to
    the next whole second, so a message is never due early), or natural language ("in 1
    hour", "tomorrow at 9am", "Friday at 3pm ET"), relative to ``now``. A time that names no
    zone or offset is in ``zone`` (an IANA name; UTC when None). Pure: returns unix seconds
    or raises ScheduleError ``SCHEDULED_AT_INVALID``; the window is checked separately."""
    if not isinstance(value, str) or not value.strip():
        raise ScheduleError(
            "SCHEDULED_AT_INVALID", "must be an ISO 8601 date-time or a phrase", field
        )
    text = value.strip()
    tz = zone_of(zone)
    if len(text) > MAX_NATURAL_LENGTH or not text.isprintable():
        raise ScheduleError("SCHEDULED_AT_INVALID", f"{text[:40]!r}... is not a time", field)
    try:
        moment = datetime.fromisoformat(text.replace("z", "Z"))
    except ValueError:
        moment = None
    if moment is not None and re.match(r"^\d{4}-\d{2}-\d{2}", text, re.ASCII):
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=tz)
    else:
        base = datetime.fromtimestamp(int(now), tz).replace(tzinfo=None)
        parsed = dateparser.parse(
            text,
            languages=["en"],
            settings={
                "RELATIVE_BASE": base,
                "TIMEZONE": tz.key,
                "RETURN_AS_TIMEZONE_AWARE": True,
                "PREFER_DATES_FROM": "future",
                "TO_TIMEZONE": "UTC",
            },
        )
        if parsed is None:
            raise ScheduleError(
                "SCHEDULED_AT_INVALID",
                f"{text!r} is not a time (ISO 8601, or e.g. 'in 1 hour', 'tomorrow at 9am')",
                field,
            )
        moment = parsed
    try:
        seconds = moment.timestamp()
    except (OverflowError, ValueError, OSError) as exc:
        raise ScheduleError("SCHEDULED_AT_INVALID", f"{text!r} is out of range", field) from exc
    return math.ceil(seconds)


_RFC2822_ZONE = re.compile(r"\s(?:[+-]\d{4}|UT|GMT|[ECMP][SD]T|Z)\s*$", re.ASCII | re.IGNORECASE)


def parse_rfc2822(value: Any, field: str) -> int:
    """An RFC 2822 date-time with its zone (Mailgun's ``o:deliverytime`` and
    ``X-Mailgun-Deliver-By``: ``Fri, 14 Oct 2011 23:10:10 -0000``; -0000 is UTC) into unix
    seconds. Pure; ScheduleError ``SCHEDULED_AT_INVALID`` for anything else, a date-time
    without a zone included."""
    bad = ScheduleError(
        "SCHEDULED_AT_INVALID",
        f"{str(value)[:60]!r} is not an RFC 2822 date-time (e.g. Fri, 14 Oct 2011 23:10:10 -0000)",
        field,
    )
    if not isinstance(value, str) or not value.isascii() or not _RFC2822_ZONE.search(value):
        raise bad
    try:
        moment = email.utils.parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError) as exc:
        raise bad from exc
    if moment.tzinfo is None:  # -0000: UTC, the sender's own zone unknown (RFC 5322 3.3)
        moment = moment.replace(tzinfo=UTC)
    try:
        return int(moment.timestamp())
    except (OverflowError, ValueError, OSError) as exc:
        raise bad from exc


# -- local wall times ---------------------------------------------------------------------------

#: What to do when a local wall time has already passed in its zone.
PassedPolicy = Literal["next_day", "send_now", "skip"]
PASSED_POLICIES: tuple[PassedPolicy, ...] = ("next_day", "send_now", "skip")
#: The stable reason of a recipient skipped because its local time had passed.
LOCAL_TIME_PASSED = "local_time_passed"

_LOCAL = re.compile(
    r"^(?:(?P<date>\d{4}-\d{2}-\d{2})[Tt ])?(?P<time>\d{2}:\d{2}(?::\d{2})?)$", re.ASCII
)
#: Days a passed local time may move forward under ``next_day`` (a date that is today in one
#: zone is yesterday in another, up to 26 hours apart).
_NEXT_DAY_LIMIT = 2


class LocalTimePassed(ScheduleError):
    """A local time that has passed under the ``skip`` policy: its recipients are rejected
    (code ``LOCAL_TIME_PASSED``, reason :data:`LOCAL_TIME_PASSED`), the others go ahead."""


def parse_local(value: Any, field: str = "sendAt.local") -> tuple[date | None, dt_time]:
    """A local wall time, ``YYYY-MM-DDTHH:MM[:SS]`` or ``HH:MM[:SS]`` (today in its zone), with
    no offset and no fraction (pure). ScheduleError ``SCHEDULED_AT_INVALID`` otherwise."""
    bad = ScheduleError(
        "SCHEDULED_AT_INVALID",
        "a local time is YYYY-MM-DDTHH:MM:SS or HH:MM:SS, without an offset "
        "(e.g. 2026-12-24T09:00:00)",
        field,
    )
    if not isinstance(value, str):
        raise bad
    match = _LOCAL.fullmatch(value.strip())
    if match is None:
        raise bad
    try:
        wall = dt_time.fromisoformat(match["time"])
        day = date.fromisoformat(match["date"]) if match["date"] else None
    except ValueError as exc:
        raise bad from exc
    if day is not None and not 1970 <= day.year <= 9000:
        raise bad
    return day, wall


def check_zone(name: Any, field: str = "sendAt.timezone") -> str:
    """``name`` if it is an IANA time zone (``Europe/Berlin``), else ScheduleError
    ``INVALID_TIME_ZONE``. Pure."""
    if not isinstance(name, str) or not name or len(name) > 64 or not name.isprintable():
        raise ScheduleError("INVALID_TIME_ZONE", "an IANA time zone, e.g. Europe/Berlin", field)
    try:
        zone_of(name)
    except ValueError as exc:
        raise ScheduleError(
            "INVALID_TIME_ZONE", f"{name[:64]!r} is not an IANA time zone", field
        ) from exc
    return name


def check_policy(value: Any, field: str = "sendAt.ifPassed") -> PassedPolicy:
    """One of :data:`PASSED_POLICIES` (None: ``next_day``); ScheduleError otherwise."""
    if value is None:
        return "next_day"
    if value not in PASSED_POLICIES:
        raise ScheduleError("INVALID_PASSED_POLICY", f"one of {', '.join(PASSED_POLICIES)}", field)
    return value  # type: ignore[no-any-return]


def local_instant(day: date, wall: dt_time, zone: ZoneInfo) -> int:
    """The unix second at which the clocks of ``zone`` show ``day`` ``wall`` (pure).

    A wall time that does not exist (the hour skipped when clocks spring forward) moves to
    the first instant after the gap, when the clocks show the gap's end (02:30 in a 02:00 to
    03:00 gap is 03:00); one that exists twice (clocks falling back) is its first occurrence.
    Never earlier than the wall time asked for, in that zone."""
    naive = datetime.combine(day, wall)
    first = naive.replace(tzinfo=zone, fold=0)
    instant = int(first.timestamp())
    if datetime.fromtimestamp(instant, zone).replace(tzinfo=None) == naive:
        return instant  # exists (fold=0 is the first of two occurrences)
    # in a gap: fold=0 reads it with the offset before the gap, fold=1 with the one after;
    # the transition lies between, at the first second that has the offset after the gap
    lo, hi = sorted((instant, int(naive.replace(tzinfo=zone, fold=1).timestamp())))
    after = datetime.fromtimestamp(hi, zone).utcoffset()
    while lo < hi:
        mid = (lo + hi) // 2
        if datetime.fromtimestamp(mid, zone).utcoffset() == after:
            hi = mid
        else:
            lo = mid + 1
    return lo


@dataclass(frozen=True)
class LocalWhen:
    """A local wall time requested in a zone (None: the account's zone, else UTC), as a front
    door read it; resolved against ``now`` by the submission core (:meth:`check`). ``day``
    None: today in the zone. ``if_passed``: what to do when it has passed there."""

    wall: dt_time
    day: date | None = None
    zone: str | None = None
    if_passed: PassedPolicy = "next_day"
    field: str = "sendAt"
    limit: int = MAX_HORIZON_SECONDS

    def in_zone(self, default: str | None) -> LocalWhen:
        """This request with its zone settled (``default``: the account's zone)."""
        return self if self.zone is not None else replace(self, zone=default or "UTC")

    def resolve(self, now: float) -> int | None:
        """The due second (pure): the wall time in the zone if still ahead; else by policy
        the same wall time on a following day (``next_day``), None for at once
        (``send_now``), or :class:`LocalTimePassed` (``skip``)."""
        zone = zone_of(self.zone)
        day = self.day or datetime.fromtimestamp(int(now), zone).date()
        due = local_instant(day, self.wall, zone)
        if due > now:
            return due
        if self.if_passed == "send_now":
            return None
        if self.if_passed == "skip":
            raise LocalTimePassed(
                "LOCAL_TIME_PASSED", f"{day}T{self.wall} has passed in {zone.key}", self.field
            )
        for days in range(1, _NEXT_DAY_LIMIT + 1):
            due = local_instant(day + timedelta(days=days), self.wall, zone)
            if due > now:
                return due
        raise ScheduleError(
            "SCHEDULED_AT_IN_PAST", f"{day}T{self.wall} in {zone.key} is long past", self.field
        )

    def check(self, now: float, horizon: int) -> int | None:
        """The due second (None: at once), within ``horizon`` and this door's limit."""
        due = self.resolve(now)
        return None if due is None else check_window(due, now, min(horizon, self.limit), self.field)


#: A time a draft asks for: an instant, or a wall time in a zone.
Requested = When | LocalWhen


def local_request(value: Any, field: str = "sendAt", limit: int = MAX_HORIZON_SECONDS) -> LocalWhen:
    """``{"local": "2026-12-24T09:00:00", "timezone": "Europe/Berlin", "ifPassed": "skip"}``
    (timezone and ifPassed optional) read into a :class:`LocalWhen`; ScheduleError otherwise."""
    if not isinstance(value, dict):
        raise ScheduleError("SCHEDULED_AT_INVALID", "an object with local and timezone", field)
    unknown = sorted(set(value) - {"local", "timezone", "ifPassed"})
    if unknown:
        raise ScheduleError("SCHEDULED_AT_INVALID", f"unknown field {unknown[0][:40]!r}", field)
    day, wall = parse_local(value.get("local"), f"{field}.local")
    zone = value.get("timezone")
    return LocalWhen(
        wall,
        day,
        check_zone(zone, f"{field}.timezone") if zone is not None else None,
        check_policy(value.get("ifPassed"), f"{field}.ifPassed"),
        field,
        limit,
    )
