"""What request spans must not record: a stream token is a credential (activities/adapters/
stream_tokens.py), and the ASGI instrumentation records the URL with its query string."""

from __future__ import annotations

import re
from typing import Any

from opentelemetry.trace import Span

from activities.adapters.stream_tokens import QUERY_PARAM

_TOKEN = re.compile(rf"({QUERY_PARAM}=)[^&#]*")
# Where the instrumentation puts the query (the old and the new HTTP conventions).
_URL_ATTRIBUTES = ("http.url", "url.full", "url.query")


def without_stream_tokens(span: Span, scope: dict[str, Any]) -> None:
    """The request span's URL attributes, with any stream token's value replaced."""
    query = scope.get("query_string") or b""
    if not span.is_recording() or QUERY_PARAM.encode() not in query:
        return
    attributes = getattr(span, "attributes", None) or {}
    for name in _URL_ATTRIBUTES:
        if isinstance(value := attributes.get(name), str):
            span.set_attribute(name, _TOKEN.sub(r"\1REDACTED", value))
