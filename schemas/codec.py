"""The orjson codec: events to bytes and back.

``decode`` validates against the union of event types a topic carries (see the registry), so a
consumer gets a typed, frozen model or a :class:`DecodeError` (a poison message), never a dict.

Strict writers, tolerant readers: :func:`encode` writes exactly the model's fields (and the
models refuse unknown ones when built), while decoding ignores fields the model does not know,
so an event that gained an optional field is read by code that predates it. An event written
in an older ``schema_version`` is brought up to the current one by the upcasters registered in
:data:`UPCASTERS` before it is validated.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Any, TypeVar, cast

import orjson
from pydantic import BaseModel, TypeAdapter, ValidationError

T = TypeVar("T")


class DecodeError(ValueError):
    """The bytes are not a valid event of the expected type(s)."""


def encode(event: BaseModel) -> bytes:
    """Serialize an event to JSON bytes (UTC datetimes as RFC 3339, no nulls dropped)."""
    return orjson.dumps(event.model_dump(mode="python"), option=orjson.OPT_UTC_Z)


@cache
def _adapter(tp: Any) -> TypeAdapter[Any]:
    return TypeAdapter(tp)


#: (event type, schema version) -> a function from that version's JSON object to the next
#: version's. A version bump of an event adds one here, so every stored event stays readable.
UPCASTERS: dict[tuple[str, int], Callable[[dict[str, Any]], dict[str, Any]]] = {
    # scheduled v2 only widened ``source`` (resend, mailgun): every v1 event is a valid v2
    ("scheduled", 1): lambda obj: obj,
    # due and dispatch v2 may carry their text by reference; a v1 event carries it inline
    # (no content_ref), which v2 still allows
    ("due", 1): lambda obj: obj,
    ("dispatch", 1): lambda obj: obj,
}


def upcast(obj: dict[str, Any]) -> bool:
    """Bring ``obj`` (a decoded JSON object) to its type's current version in place; True if
    any upcaster applied."""
    changed = False
    while True:
        step = UPCASTERS.get((obj.get("type", ""), obj.get("schema_version", 0)))
        if step is None:
            return changed
        version = obj["schema_version"]
        obj.update(step(dict(obj)))
        obj["schema_version"] = version + 1
        changed = True


def decode_as(data: bytes | str, tp: type[T] | Any) -> T:
    """Decode ``data`` as ``tp`` (a model or an annotated union of models), ignoring unknown
    fields and upcasting older versions."""
    adapter = _adapter(cast(Any, tp))
    try:
        result: T = adapter.validate_json(data, extra="ignore")
    except ValidationError as exc:
        # the hot path above is the current version; an older one is upcast first
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise DecodeError(str(exc)) from exc
        if not isinstance(obj, dict) or not upcast(obj):
            raise DecodeError(str(exc)) from exc
        try:
            result = adapter.validate_python(obj, extra="ignore")
        except ValidationError as exc2:
            raise DecodeError(str(exc2)) from exc2
    return result


def decode(data: bytes | str, topic: str) -> Any:
    """Decode ``data`` as the value type the registry declares for logical topic ``topic``."""
    from schemas.registry import topic_spec

    return decode_as(data, topic_spec(topic).value)
