"""The send-time parser accepts exactly the valid inputs and round-trips them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.ingest.schedule import (
    MAX_HORIZON_SECONDS,
    ScheduleError,
    check_window,
    parse_time,
    resolve_scheduled_at,
)

NOW = 1_780_000_000.0

moments = st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2200, 1, 1)).map(
    lambda d: d.replace(microsecond=0)
)
offsets = st.integers(min_value=-23 * 60 - 59, max_value=23 * 60 + 59)


def _rfc3339(moment: datetime, offset_minutes: int, z: bool) -> str:
    if z:
        return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
    tz = timezone(timedelta(minutes=offset_minutes))
    local = moment.replace(tzinfo=UTC).astimezone(tz)
    sign = "+" if offset_minutes >= 0 else "-"
    hh, mm = divmod(abs(offset_minutes), 60)
    return local.strftime("%Y-%m-%dT%H:%M:%S") + f"{sign}{hh:02d}:{mm:02d}"


@given(moments, offsets, st.booleans())
def test_rfc3339_with_offset_round_trips(moment: datetime, offset: int, z: bool) -> None:
    expected = int(moment.replace(tzinfo=UTC).timestamp())
    assert parse_time(_rfc3339(moment, offset, z)) == expected


@given(st.integers(min_value=0, max_value=10**11))
def test_unix_seconds_round_trip_as_int_and_string(ts: int) -> None:
    assert parse_time(ts) == ts
    assert parse_time(str(ts)) == ts
    assert parse_time(float(ts)) == ts


@given(moments, st.integers(min_value=1, max_value=999_999))
def test_fractional_seconds_are_rejected_never_rounded(moment: datetime, micros: int) -> None:
    text = moment.strftime("%Y-%m-%dT%H:%M:%S") + f".{micros:06d}Z"
    with pytest.raises(ScheduleError) as err:
        parse_time(text)
    assert err.value.code == "SCHEDULED_AT_FRACTIONAL"
    with pytest.raises(ScheduleError) as err:
        parse_time(moment.timestamp() + micros / 1e6)
    assert err.value.code == "SCHEDULED_AT_FRACTIONAL"


def test_zero_fraction_is_a_whole_second() -> None:
    assert parse_time("2026-05-15T10:00:00.000Z") == parse_time("2026-05-15T10:00:00Z")


@given(moments)
def test_missing_offset_is_rejected(moment: datetime) -> None:
    with pytest.raises(ScheduleError) as err:
        parse_time(moment.strftime("%Y-%m-%dT%H:%M:%S"))
    assert err.value.code == "SCHEDULED_AT_NO_OFFSET"


@given(st.text(max_size=40))
def test_anything_else_is_rejected_or_parses_consistently(text: str) -> None:
    try:
        value = parse_time(text)
    except ScheduleError as err:
        assert err.code.startswith("SCHEDULED_AT_")
    else:
        assert isinstance(value, int)


@pytest.mark.parametrize(
    ("value", "code"),
    [
        ("tomorrow", "SCHEDULED_AT_INVALID"),
        (True, "SCHEDULED_AT_INVALID"),
        ([1], "SCHEDULED_AT_INVALID"),
        ("2026-02-30T10:00:00Z", "SCHEDULED_AT_INVALID"),
        ("2026-05-15T10:00:00+24:00", "SCHEDULED_AT_INVALID"),
        ("2026-05-15 10:00:00Z", "SCHEDULED_AT_INVALID"),
        ("1762435200.5", "SCHEDULED_AT_FRACTIONAL"),
    ],
)
def test_rejections_have_stable_codes(value: object, code: str) -> None:
    with pytest.raises(ScheduleError) as err:
        parse_time(value)
    assert err.value.code == code


def test_window_future_and_30_days() -> None:
    assert check_window(int(NOW) + 1, NOW) == int(NOW) + 1
    assert check_window(int(NOW) + MAX_HORIZON_SECONDS, NOW) == int(NOW) + MAX_HORIZON_SECONDS
    for due, code in [
        (int(NOW), "SCHEDULED_AT_IN_PAST"),
        (int(NOW) - 5, "SCHEDULED_AT_IN_PAST"),
        (int(NOW) + MAX_HORIZON_SECONDS + 1, "SCHEDULED_AT_TOO_FAR"),
    ]:
        with pytest.raises(ScheduleError) as err:
            check_window(due, NOW)
        assert err.value.code == code


def test_aliases() -> None:
    due = int(NOW) + 60
    assert resolve_scheduled_at({}, NOW) is None
    assert resolve_scheduled_at({"scheduledAt": None}, NOW) is None
    assert resolve_scheduled_at({"scheduled_at": due}, NOW) == due
    assert resolve_scheduled_at({"scheduledAt": due, "scheduled_at": str(due)}, NOW) == due
    with pytest.raises(ScheduleError) as err:
        resolve_scheduled_at({"scheduledAt": due, "scheduled_at": due + 1}, NOW)
    assert err.value.code == "SCHEDULED_AT_CONFLICT"
