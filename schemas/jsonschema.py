"""Generate the committed JSON Schema files from the models.

``python -m schemas.jsonschema`` rewrites ``schemas/json/``; ``--check`` exits 1 when the files
differ from what the models generate (CI runs the equivalent test).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, get_args

from pydantic import BaseModel, TypeAdapter

from schemas.registry import TOPICS

JSON_DIR = Path(__file__).parent / "json"
#: the event schemas as released: one file per (type, version), never edited once there
RELEASED_DIR = Path(__file__).parent / "released"
SCHEMA_BASE = "https://kairos.dev/schemas/"


def _event_models(tp: Any) -> list[type[BaseModel]]:
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return [tp]
    args = get_args(tp)
    models: list[type[BaseModel]] = []
    for arg in args:
        models.extend(_event_models(arg))
    return models


def _dump(schema: dict[str, Any]) -> str:
    return json.dumps(_tolerant(schema), indent=2, sort_keys=True) + "\n"


def _tolerant(schema: Any) -> Any:
    """The schema as readers should apply it: fields it does not name are allowed (an event
    may gain optional fields without a new version), so ``additionalProperties: false`` goes.
    Writers stay strict: the models forbid unknown fields."""
    if isinstance(schema, dict):
        return {
            k: _tolerant(v)
            for k, v in schema.items()
            if not (k == "additionalProperties" and v is False)
        }
    if isinstance(schema, list):
        return [_tolerant(v) for v in schema]
    return schema


def generate() -> dict[str, str]:
    """Relative file name -> JSON text, for every event type and every topic with a value."""
    files: dict[str, str] = {}
    for spec in TOPICS:
        if spec.value is None:
            continue
        topic_schema = TypeAdapter(spec.value).json_schema(mode="serialization")
        topic_schema["$id"] = f"{SCHEMA_BASE}topics/{spec.name}.schema.json"
        topic_schema["title"] = f"{spec.name}"
        topic_schema["description"] = spec.description
        topic_schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        files[f"topics/{spec.name}.schema.json"] = _dump(topic_schema)
        for model in _event_models(spec.value):
            type_field = model.model_fields["type"].default
            version = model.model_fields["schema_version"].default
            name = f"{type_field}.v{version}.schema.json"
            schema = model.model_json_schema(mode="serialization")
            schema["$id"] = f"{SCHEMA_BASE}events/{name}"
            schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
            files[f"events/{name}"] = _dump(schema)
    # an older version of an event stays documented as released: events of it are still in
    # the topics (read through its upcaster, schemas.codec.UPCASTERS)
    for path in sorted(RELEASED_DIR.glob("events/*.json")):
        name = f"events/{path.name}"
        if name not in files and _superseded(path.name, files):
            files[name] = path.read_text()
    return files


def _superseded(filename: str, files: dict[str, str]) -> bool:
    """Whether released ``<type>.v<n>.schema.json`` has a later version generated."""
    from schemas.codec import UPCASTERS

    kind, _, rest = filename.partition(".v")
    version = int(rest.split(".", 1)[0])
    later = any(
        f"events/{kind}.v{v}.schema.json" in files for v in range(version + 1, version + 100)
    )
    return later and (kind, version) in UPCASTERS


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail when the files drift")
    parser.add_argument(
        "--release",
        action="store_true",
        help="add the event schemas not released yet to schemas/released (after a check that "
        "no released one is broken)",
    )
    args = parser.parse_args(argv)
    files = generate()
    if args.release:
        return release(files)
    existing = {p.relative_to(JSON_DIR).as_posix() for p in JSON_DIR.rglob("*.json")}
    drift = sorted(
        name
        for name in files.keys() | existing
        if name not in files or name not in existing or (JSON_DIR / name).read_text() != files[name]
    )
    if args.check:
        for name in drift:
            print(f"drift: schemas/json/{name}", file=sys.stderr)
        return 1 if drift else 0
    for name in existing - files.keys():
        (JSON_DIR / name).unlink()
    for name, text in files.items():
        path = JSON_DIR / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    print(f"wrote {len(files)} schema files to {JSON_DIR}")
    return 0


def release(files: dict[str, str]) -> int:
    """Snapshot every event schema version that is not released yet; refuse when a change
    to a released one is not backward compatible."""
    from schemas.compat import breaking_changes

    problems = []
    for path in sorted(RELEASED_DIR.glob("events/*.json")):
        name = f"events/{path.name}"
        if name not in files:
            problems.append(f"{name}: released, no longer generated")
            continue
        for p in breaking_changes(json.loads(path.read_text()), json.loads(files[name])):
            problems.append(f"{name}: {p}")
    if problems:
        print("\n".join(problems), file=sys.stderr)
        return 1
    added = 0
    for name, text in files.items():
        target = RELEASED_DIR / name
        if name.startswith("events/") and not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
            added += 1
    print(f"released {added} new event schema files into {RELEASED_DIR}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
