"""The event contract can evolve: released schemas stay readable, readers ignore what they do
not know, older versions are upcast."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from schemas import codec
from schemas.codec import DecodeError, decode, decode_as, encode
from schemas.compat import breaking_changes
from schemas.events import Scheduled
from schemas.jsonschema import RELEASED_DIR, generate

EXAMPLES = RELEASED_DIR.parent / "examples"


def current(name: str) -> dict[str, Any]:
    return dict(json.loads(generate()[f"events/{name}"]))


def test_every_released_schema_is_still_readable_and_written() -> None:
    files = generate()
    released = sorted(RELEASED_DIR.glob("events/*.json"))
    assert released, "no released schemas found"
    for path in released:
        name = f"events/{path.name}"
        assert name in files, f"{name} was released and is no longer generated"
        problems = breaking_changes(json.loads(path.read_text()), json.loads(files[name]))
        assert not problems, f"{name} changed incompatibly: {problems} (bump its schema_version)"


def test_every_generated_event_schema_is_released() -> None:
    missing = [
        name
        for name in generate()
        if name.startswith("events/") and not (RELEASED_DIR / name).exists()
    ]
    assert not missing, f"run python -m schemas.jsonschema --release for {missing}"


@pytest.fixture
def released() -> dict[str, Any]:
    return json.loads((RELEASED_DIR / "events" / "scheduled.v1.schema.json").read_text())


def test_an_added_optional_field_passes(released: dict[str, Any]) -> None:
    new = copy.deepcopy(released)
    new["properties"]["priority"] = {"anyOf": [{"type": "integer"}, {"type": "null"}]}
    assert breaking_changes(released, new) == []


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda s: s["properties"].pop("batch_id"), "batch_id: removed"),
        (
            lambda s: s["properties"].update(due=s["properties"].pop("due_at")),
            "due_at: removed",
        ),
        (lambda s: s["properties"].update(due_at={"type": "string"}), "due_at: type changed"),
        (lambda s: s["required"].remove("due_at"), "due_at: was required, now optional"),
        (lambda s: s["required"].append("batch_id"), "batch_id: was optional, now required"),
        (
            lambda s: (
                s["properties"].update(priority={"type": "integer"}),
                s["required"].append("priority"),
            ),
            "priority: added as required",
        ),
        (
            lambda s: s["$defs"]["MessageContent"]["properties"].pop("rcpt_to"),
            "content.rcpt_to: removed",
        ),
    ],
    ids=["removed", "renamed", "retyped", "now-optional", "now-required", "new-required", "nested"],
)
def test_a_breaking_change_is_caught(released: dict[str, Any], change: Any, expected: str) -> None:
    new = copy.deepcopy(released)
    change(new)
    problems = breaking_changes(released, new)
    assert any(p.startswith(expected) for p in problems), problems


def test_an_old_reader_decodes_a_newer_event_with_more_fields() -> None:
    payload = json.loads((EXAMPLES / "scheduled.v1.json").read_text())
    payload["priority"] = 5  # a field this code does not know yet
    payload["content"]["tracking"] = {"opens": True}
    event = decode(json.dumps(payload), "schedule")
    assert isinstance(event, Scheduled) and event.message_id == payload["message_id"]
    # and writes exactly its own schema
    assert "priority" not in json.loads(encode(event))


def test_writers_stay_strict() -> None:
    payload = json.loads((EXAMPLES / "scheduled.v1.json").read_text())
    with pytest.raises(ValueError):
        Scheduled(**{**payload, "priority": 5})


def test_an_older_version_is_upcast(monkeypatch: pytest.MonkeyPatch) -> None:
    payload = json.loads((EXAMPLES / "scheduled.v1.json").read_text())
    old = {**payload, "schema_version": 0, "due": payload["due_at"]}
    del old["due_at"]
    with pytest.raises(DecodeError):
        decode_as(json.dumps(old), Scheduled)

    def v0_to_v1(obj: dict[str, Any]) -> dict[str, Any]:
        obj["due_at"] = obj.pop("due")
        return obj

    monkeypatch.setitem(codec.UPCASTERS, ("scheduled", 0), v0_to_v1)
    event = decode_as(json.dumps(old), Scheduled)
    assert event.due_at == payload["due_at"]
    assert event.schema_version == Scheduled.model_fields["schema_version"].default


def test_generated_schemas_let_readers_ignore_new_fields() -> None:
    assert "additionalProperties" not in json.dumps(current("scheduled.v1.schema.json"))
