"""Fixtures of the front-door tests: the whole ingest HTTP app on fakes at a fixed second."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from kairos.clock import FakeClock
from tests.unit.ingest.fakes import Ingest, ingest

#: 2027-01-15T08:00:00Z, a Friday: the second the ``app`` fixture's clock stands at.
NOW = 1_800_000_000


@pytest.fixture
def app() -> Ingest:
    return ingest(FakeClock(NOW))


@pytest.fixture
def client(app: Ingest) -> TestClient:
    return TestClient(app.app)
