"""How a transcript (and a compliance replay) keeps a question's images: by reference, never bytes."""

from __future__ import annotations

import base64
import hashlib
from typing import Any


def image_reference(url: str) -> dict[str, Any]:
    """How the transcript keeps an image: its link, or an inline one's type, size and digest."""
    if not url.startswith("data:"):
        return {"type": "image", "url": url}
    header, _, data = url.partition(",")
    raw = base64.b64decode(data, validate=False)
    return {
        "type": "image",
        "media_type": header.removeprefix("data:").split(";")[0],
        "bytes": len(raw),
        "sha256": hashlib.sha256(raw).hexdigest(),
    }
