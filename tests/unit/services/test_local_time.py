"""Local wall times in IANA zones (pure): the 2026 and 2027 DST transitions of several zones
(one with a 30-minute offset, one with a 30-minute DST shift, one that dropped DST in 2022),
the passed-time policies, and never early in the recipient's zone (a property)."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, available_timezones

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.ingest.schedule import (
    LocalTimePassed,
    LocalWhen,
    ScheduleError,
    local_instant,
    local_request,
    parse_local,
)


def utc(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp())


#: zone, local date and wall time, the UTC instant it must be (what the case shows)
DST_CASES = [
    # Europe/Berlin: 02:00 -> 03:00 on the last Sunday of March, 03:00 -> 02:00 of October
    ("Europe/Berlin", "2026-03-29", "02:30", "2026-03-29T01:00:00", "gap: the end of the gap"),
    ("Europe/Berlin", "2026-03-29", "03:00", "2026-03-29T01:00:00", "right after the gap"),
    ("Europe/Berlin", "2026-10-25", "02:30", "2026-10-25T00:30:00", "twice: the first (CEST)"),
    ("Europe/Berlin", "2027-03-28", "02:00", "2027-03-28T01:00:00", "gap 2027"),
    ("Europe/Berlin", "2027-10-31", "02:59:59", "2027-10-31T00:59:59", "twice 2027"),
    ("Europe/Berlin", "2027-10-31", "03:00", "2027-10-31T02:00:00", "after the repeat"),
    # America/New_York: 02:00 -> 03:00 in March, 02:00 -> 01:00 in November
    ("America/New_York", "2026-03-08", "02:30", "2026-03-08T07:00:00", "gap"),
    ("America/New_York", "2026-11-01", "01:30", "2026-11-01T05:30:00", "twice: EDT first"),
    ("America/New_York", "2027-03-14", "02:00", "2027-03-14T07:00:00", "gap 2027"),
    ("America/New_York", "2027-11-07", "01:00", "2027-11-07T05:00:00", "twice 2027"),
    # Australia/Adelaide: +09:30 / +10:30, southern hemisphere (October starts DST)
    ("Australia/Adelaide", "2026-10-04", "02:30", "2026-10-03T16:30:00", "gap, 30-min offset"),
    ("Australia/Adelaide", "2026-04-05", "02:30", "2026-04-04T16:00:00", "twice: ACDT first"),
    ("Australia/Adelaide", "2027-10-03", "02:00", "2027-10-02T16:30:00", "gap 2027"),
    ("Australia/Adelaide", "2027-04-04", "02:15", "2027-04-03T15:45:00", "twice 2027"),
    ("Australia/Adelaide", "2026-12-24", "09:00", "2026-12-23T22:30:00", "summer +10:30"),
    # Australia/Lord_Howe: a 30-minute DST shift, 02:00 -> 02:30 and 02:00 -> 01:30
    ("Australia/Lord_Howe", "2026-10-04", "02:15", "2026-10-03T15:30:00", "half-hour gap"),
    ("Australia/Lord_Howe", "2027-04-04", "01:45", "2027-04-03T14:45:00", "half-hour twice"),
    # Asia/Kolkata: +05:30, no DST
    ("Asia/Kolkata", "2026-12-24", "09:00", "2026-12-24T03:30:00", "30-min offset"),
    # America/Mexico_City dropped DST in 2022: 02:30 on the old spring-forward day exists
    ("America/Mexico_City", "2026-04-05", "02:30", "2026-04-05T08:30:00", "no DST since 2022"),
    ("America/Mexico_City", "2027-10-31", "01:30", "2027-10-31T07:30:00", "no repeat either"),
]


@pytest.mark.parametrize(
    ("zone", "day", "wall", "expected", "what"),
    DST_CASES,
    ids=[f"{c[0]} {c[4]}" for c in DST_CASES],
)
def test_dst_transitions(zone: str, day: str, wall: str, expected: str, what: str) -> None:
    got = local_instant(date.fromisoformat(day), time.fromisoformat(wall), ZoneInfo(zone))
    assert got == utc(expected), datetime.fromtimestamp(got, UTC)


#: 10:00 UTC on 2026-12-03: 09:00 has passed in London, not in New York
NOW = utc("2026-12-03T10:00:00")


def nine(zone: str, policy: str = "next_day") -> LocalWhen:
    return LocalWhen(time(9), None, zone, policy)  # type: ignore[arg-type]


def test_a_local_time_still_ahead_is_today() -> None:
    assert nine("America/New_York").resolve(NOW) == utc("2026-12-03T14:00:00")


def test_passed_next_day_is_the_same_wall_time_tomorrow() -> None:
    assert nine("Europe/London").resolve(NOW) == utc("2026-12-04T09:00:00")
    # across a DST change the wall time stays, the offset moves
    passed = LocalWhen(time(9), date(2026, 3, 28), "Europe/Berlin")
    assert passed.resolve(utc("2026-03-28T09:00:00")) == utc("2026-03-29T07:00:00")


def test_passed_send_now_is_at_once() -> None:
    assert nine("Europe/London", "send_now").resolve(NOW) is None


def test_passed_skip_is_a_stable_rejection() -> None:
    with pytest.raises(LocalTimePassed) as caught:
        nine("Europe/London", "skip").resolve(NOW)
    assert caught.value.code == "LOCAL_TIME_PASSED"


def test_a_date_long_past_is_refused_not_moved() -> None:
    with pytest.raises(ScheduleError) as caught:
        LocalWhen(time(9), date(2026, 11, 1), "UTC").resolve(NOW)
    assert caught.value.code == "SCHEDULED_AT_IN_PAST"


def test_the_account_zone_fills_in() -> None:
    request = LocalWhen(time(9))
    assert request.in_zone("Asia/Tokyo").zone == "Asia/Tokyo"
    assert request.in_zone(None).zone == "UTC"
    assert LocalWhen(time(9), None, "Europe/Paris").in_zone("Asia/Tokyo").zone == "Europe/Paris"


@pytest.mark.parametrize(
    ("value", "code"),
    [
        ({"local": "2026-12-24T09:00:00+01:00"}, "SCHEDULED_AT_INVALID"),
        ({"local": "2026-12-24T25:00:00"}, "SCHEDULED_AT_INVALID"),
        ({"local": "9am"}, "SCHEDULED_AT_INVALID"),
        ({"local": 900}, "SCHEDULED_AT_INVALID"),
        ({"local": "0001-01-01T09:00:00"}, "SCHEDULED_AT_INVALID"),
        ({"local": "09:00", "timezone": "Mars/Olympus"}, "INVALID_TIME_ZONE"),
        ({"local": "09:00", "timezone": "../../etc/passwd"}, "INVALID_TIME_ZONE"),
        ({"local": "09:00", "timezone": "Europe/Berlin\x00"}, "INVALID_TIME_ZONE"),
        ({"local": "09:00", "ifPassed": "later"}, "INVALID_PASSED_POLICY"),
        ({"local": "09:00", "zone": "UTC"}, "SCHEDULED_AT_INVALID"),
        ("2026-12-24T09:00:00", "SCHEDULED_AT_INVALID"),
    ],
)
def test_hostile_local_times_are_refused(value: object, code: str) -> None:
    with pytest.raises(ScheduleError) as caught:
        local_request(value)
    assert caught.value.code == code


def test_parse_local_forms() -> None:
    assert parse_local("2026-12-24T09:00:00") == (date(2026, 12, 24), time(9))
    assert parse_local("2026-12-24 09:00") == (date(2026, 12, 24), time(9))
    assert parse_local("09:30") == (None, time(9, 30))


ZONES = sorted(z for z in available_timezones() if "/" in z and not z.startswith("Etc/"))
instants = st.integers(min_value=utc("2026-01-01T00:00:00"), max_value=utc("2028-01-01T00:00:00"))


@settings(max_examples=400, deadline=None)
@given(
    zone=st.sampled_from(ZONES),
    now=instants,
    shift=st.integers(min_value=-2 * 86400, max_value=3 * 86400),
    dated=st.booleans(),
    policy=st.sampled_from(["next_day", "send_now"]),
)
def test_never_early_in_the_recipients_zone(
    zone: str, now: int, shift: int, dated: bool, policy: str
) -> None:
    """Whatever the zone, the instant and the wall time: the due second is after ``now`` and
    the recipient's clock then shows the wall time asked for, or later (a DST gap, a later
    day); when the wall time exists that day and is ahead, exactly it."""
    tz = ZoneInfo(zone)
    wanted = datetime.fromtimestamp(now + shift, tz).replace(tzinfo=None, microsecond=0)
    day = wanted.date() if dated else None
    request = LocalWhen(wanted.time(), day, zone, policy)  # type: ignore[arg-type]
    try:
        due = request.resolve(now)
    except ScheduleError as exc:
        assert exc.code == "SCHEDULED_AT_IN_PAST" and dated
        return
    if due is None:
        assert policy == "send_now"
        return
    assert due > now
    shown = datetime.fromtimestamp(due, tz).replace(tzinfo=None)
    asked = datetime.combine(day or datetime.fromtimestamp(now, tz).date(), wanted.time())
    assert shown >= asked
    assert shown.time() >= wanted.time() or shown.date() > asked.date()
    if shown.date() == asked.date() and shown != asked:  # moved on its own day: only by a gap
        assert shown - asked <= timedelta(hours=3)
        assert datetime.fromtimestamp(due - 1, tz).replace(tzinfo=None) < asked
