"""The event contract: committed JSON Schemas match the models; golden examples validate."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas import decode, decode_as, encode
from schemas.codec import DecodeError, upcast
from schemas.events import Delivered, Outcome, Scheduled, Tick
from schemas.jsonschema import JSON_DIR, generate
from schemas.registry import TOPICS, topic_spec

EXAMPLES = Path(__file__).parents[3] / "schemas" / "examples"


def test_committed_schemas_match_models() -> None:
    generated = generate()
    on_disk = {p.relative_to(JSON_DIR).as_posix(): p.read_text() for p in JSON_DIR.rglob("*.json")}
    assert set(on_disk) == set(generated), "run: python -m schemas.jsonschema"
    drifted = [name for name, text in generated.items() if on_disk[name] != text]
    assert not drifted, (
        f"schemas drifted from the models: {drifted}; run python -m schemas.jsonschema"
    )


@pytest.mark.parametrize("example", sorted(EXAMPLES.glob("*.json")), ids=lambda p: p.name)
def test_golden_example_validates_and_decodes(example: Path) -> None:
    payload = json.loads(example.read_text())
    schema = json.loads((JSON_DIR / "events" / f"{example.stem}.schema.json").read_text())
    jsonschema.Draft202012Validator(schema).validate(payload)
    topics = [s for s in TOPICS if s.value is not None]
    decoded = [decode(example.read_bytes(), s.name) for s in topics if _fits(example, s.name)]
    assert decoded, f"{example.name} is carried by no topic"
    current = dict(payload)
    upcast(current)  # an example of an older version is read as the current one
    assert json.loads(encode(decoded[0])) == current


def _fits(example: Path, topic: str) -> bool:
    try:
        decode(example.read_bytes(), topic)
    except DecodeError:
        return False
    return True


def test_outcome_examples_validate_against_the_topic_schema() -> None:
    schema = json.loads((JSON_DIR / "topics" / "outcomes.schema.json").read_text())
    validator = jsonschema.Draft202012Validator(schema)
    for name in ("delivered", "deferred", "failed", "cancelled"):
        validator.validate(json.loads((EXAMPLES / f"{name}.v1.json").read_text()))
    with pytest.raises(jsonschema.ValidationError):
        validator.validate(json.loads((EXAMPLES / "scheduled.v1.json").read_text()))


def test_events_are_frozen() -> None:
    ev = decode_as((EXAMPLES / "delivered.v1.json").read_bytes(), Delivered)
    with pytest.raises(Exception, match="frozen"):
        ev.attempt = 2  # type: ignore[misc]


def test_unknown_fields_are_ignored_and_unknown_types_rejected() -> None:
    payload = json.loads((EXAMPLES / "delivered.v1.json").read_text())
    tolerant = decode_as(json.dumps({**payload, "surprise": 1}), Outcome)
    assert tolerant == decode_as(json.dumps(payload), Outcome)
    with pytest.raises(DecodeError):
        decode_as(json.dumps({**payload, "type": "exploded"}), Outcome)


def test_unknown_topic_names_the_known_ones() -> None:
    with pytest.raises(KeyError, match="outcomes"):
        topic_spec("nope")


@given(st.integers(min_value=0, max_value=63), st.floats(min_value=0, max_value=4e9))
def test_tick_round_trips(partition: int, now: float) -> None:
    tick = Tick(partition=partition, now=now)
    assert decode(encode(tick), "schedule") == tick


def test_scheduled_round_trips_with_content() -> None:
    ev = decode_as((EXAMPLES / "scheduled.v1.json").read_bytes(), Scheduled)
    assert decode(encode(ev), "schedule") == ev
    assert ev.content.raw().startswith(b"From: ")


def test_registry_declares_each_topic_once_with_outcomes_for_analytics() -> None:
    names = [s.name for s in TOPICS]
    assert len(names) == len(set(names))
    outcomes = topic_spec("outcomes")
    assert "analytics" in outcomes.consumers
    assert outcomes.cleanup_policy == "delete"
    # faust requires a table's changelog to be partitioned like its source topic
    schedule = topic_spec("schedule")
    for spec in TOPICS:
        if spec.name.startswith("timer-"):
            assert spec.partitions == schedule.partitions
