"""The orjson codec: events to bytes and back.

``decode`` validates against the union of event types a topic carries (see the registry), so a
consumer gets a typed, frozen model or a :class:`DecodeError` (a poison message), never a dict.
"""

from __future__ import annotations

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


def decode_as(data: bytes | str, tp: type[T] | Any) -> T:
    """Decode ``data`` as ``tp`` (a model or an annotated union of models)."""
    try:
        result: T = _adapter(cast(Any, tp)).validate_json(data)
    except ValidationError as exc:
        raise DecodeError(str(exc)) from exc
    return result


def decode(data: bytes | str, topic: str) -> Any:
    """Decode ``data`` as the value type the registry declares for logical topic ``topic``."""
    from schemas.registry import topic_spec

    return decode_as(data, topic_spec(topic).value)
