"""Backward compatibility of event schemas: what a change may and may not do.

A consumer written against a released schema must keep reading every event the new code
writes, and the new code must keep reading every event already in the topics. So between a
released version of an event and the current one:

* no field is removed or renamed, and none changes its type (or its set of allowed values);
* no field that was required becomes optional (a reader relies on it being there), and no
  field that was optional becomes required (old events lack it);
* a new field is optional (it has a default): readers ignore fields they do not know.

A change that breaks one of these is a new ``schema_version`` of the event (with an upcaster
from the old one, see :mod:`schemas.codec`), never an edit of a released one.
"""

from __future__ import annotations

from typing import Any

#: keywords that document a schema without constraining it
_ANNOTATIONS = {"title", "description", "default", "examples", "$id", "$schema"}


def _resolve(schema: Any, root: dict[str, Any]) -> Any:
    while isinstance(schema, dict) and "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        schema = root.get("$defs", {})[name]
    return schema


def breaking_changes(
    old: dict[str, Any], new: dict[str, Any], path: str = "", roots: tuple[Any, Any] | None = None
) -> list[str]:
    """What in ``new`` breaks a reader or writer of ``old`` (empty when compatible)."""
    old_root, new_root = roots or (old, new)
    old, new = _resolve(old, old_root), _resolve(new, new_root)
    problems: list[str] = []
    where = path or "the event"
    if "properties" in old or "properties" in new:
        old_props, new_props = old.get("properties", {}), new.get("properties", {})
        old_req, new_req = set(old.get("required", ())), set(new.get("required", ()))
        for name, sub in old_props.items():
            field = f"{path}.{name}" if path else name
            if name not in new_props:
                problems.append(f"{field}: removed")
                continue
            if name in old_req and name not in new_req:
                problems.append(f"{field}: was required, now optional")
            if name not in old_req and name in new_req:
                problems.append(f"{field}: was optional, now required")
            problems.extend(breaking_changes(sub, new_props[name], field, (old_root, new_root)))
        for name in new_props.keys() - old_props.keys():
            field = f"{path}.{name}" if path else name
            if name in new_req:
                problems.append(f"{field}: added as required (old events lack it)")
        return problems
    if "items" in old or "items" in new:
        return breaking_changes(
            old.get("items", {}), new.get("items", {}), f"{path}[]", (old_root, new_root)
        )
    for key in ("anyOf", "oneOf"):
        if key in old or key in new:
            a = [_shape(_resolve(s, old_root), old_root) for s in old.get(key, [old])]
            b = [_shape(_resolve(s, new_root), new_root) for s in new.get(key, [new])]
            if sorted(map(repr, a)) != sorted(map(repr, b)):
                problems.append(f"{where}: type changed")
            return problems
    if _shape(old, old_root) != _shape(new, new_root):
        problems.append(f"{where}: type changed")
    return problems


def _shape(schema: Any, root: dict[str, Any]) -> Any:
    """A schema without its annotations, references resolved: what it constrains."""
    schema = _resolve(schema, root)
    if isinstance(schema, dict):
        return {
            k: _shape(v, root)
            for k, v in sorted(schema.items())
            if k not in _ANNOTATIONS and k != "$defs"
        }
    if isinstance(schema, list):
        return [_shape(v, root) for v in schema]
    return schema
