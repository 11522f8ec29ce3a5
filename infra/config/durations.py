"""Durations as temporal.yaml writes them: ``500ms``, ``30s``, ``2m``, ``1h``, ``1d``."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any

from pydantic import BeforeValidator, TypeAdapter, ValidationError

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


_ISO_DURATION = TypeAdapter(timedelta)


def parse_duration(value: Any) -> timedelta:
    """Accept ``500ms``, ``30s``, ``2m``, ``1h``, ``1d``, a number of seconds, or a timedelta.

    ISO 8601 (``PT30S``) is accepted too: it is how these values travel in workflow inputs.
    """
    if isinstance(value, timedelta):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return timedelta(seconds=value)
    if isinstance(value, str):
        if match := _DURATION.match(value):
            return timedelta(seconds=float(match[1]) * _UNIT_SECONDS[match[2]])
        if value.startswith(("P", "-P")):
            try:
                return _ISO_DURATION.validate_python(value)
            except ValidationError:
                pass
    raise ValueError(f"not a duration: {value!r} (use e.g. 500ms, 30s, 2m, 1h)")


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]


def format_duration(span: timedelta) -> str:
    """In the largest exact unit: ``1d``, ``2h``, ``15m``, ``30s``, ``500ms`` (as parse_duration reads)."""
    ms = round(span.total_seconds() * 1000)
    for unit in ("d", "h", "m", "s"):
        size = int(_UNIT_SECONDS[unit] * 1000)
        if ms and ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"
