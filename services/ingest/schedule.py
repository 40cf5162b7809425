"""Parsing of a requested send time (``scheduledAt``, ``X-Scheduled-At``, ``send_at``,
Resend's ``scheduled_at``, Mailgun's ``o:deliverytime``).

Pure: every function takes ``now`` and either returns whole unix seconds or raises
:class:`ScheduleError` with a stable code. A bad time is never turned into an immediate send.
"""

from __future__ import annotations

import email.utils
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
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
