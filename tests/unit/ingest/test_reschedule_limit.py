"""A reschedule cannot outlive the message's text: the schedule stream keeps it for a while
past the horizon after submission, so the horizon counts from the submission."""

from __future__ import annotations

import pytest

from services.ingest.compose import SubmitError
from services.ingest.manage import check_kept
from services.ingest.schedule import MAX_HORIZON_SECONDS

SUBMITTED = 1_800_000_000  # 2027-01-15T08:00:00Z


def test_a_reschedule_within_the_horizon_of_its_submission_is_allowed() -> None:
    check_kept("2027-01-15T08:00:00Z", SUBMITTED + MAX_HORIZON_SECONDS)
    check_kept(None, SUBMITTED + 10 * MAX_HORIZON_SECONDS)  # not in the projection yet: allowed


def test_a_reschedule_past_it_is_too_far() -> None:
    with pytest.raises(SubmitError) as err:
        check_kept("2027-01-15T08:00:00Z", SUBMITTED + MAX_HORIZON_SECONDS + 1)
    assert err.value.code == "SCHEDULED_AT_TOO_FAR" and err.value.field == "scheduledAt"
