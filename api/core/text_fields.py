"""Request fields that end up in Postgres, Redis or a model: text those can keep, or a 422 that says why."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator

from activities.logic.input_guard import unstorable


def storable(value: str) -> str:
    if why := unstorable(value):
        raise ValueError(f"the text {why}")
    return value


def storable_json(value: Any) -> Any:
    """Every key and string inside a JSON value (Postgres jsonb refuses \\u0000 as well)."""
    if isinstance(value, str):
        storable(value)
    elif isinstance(value, dict):
        for key, item in value.items():
            storable(key)
            storable_json(item)
    elif isinstance(value, list):
        for item in value:
            storable_json(item)
    return value


StorableStr = Annotated[str, AfterValidator(storable)]
StorableObject = Annotated[dict[str, Any], AfterValidator(storable_json)]
