"""A Temporal codec server: the web UI (and `temporal` CLI) send encrypted payloads here to have them
decoded for an operator holding an admin key. Temporal's remote codec protocol: POST a `Payloads`
message as proto JSON, get one back."""

from __future__ import annotations

from typing import Any

from cryptography.exceptions import InvalidTag
from fastapi import APIRouter, HTTPException, Request, Response
from google.protobuf import json_format
from temporalio.api.common.v1 import Payloads

from activities.adapters.tenant_keys import KeyShredded
from api.core.deps import ResourcesDep
from api.core.errors import error_responses
from infra.runtime.payload_codec import UnknownPayloadKey

router = APIRouter(prefix="/codec", tags=["codec"])


async def _payloads(request: Request) -> Payloads:
    try:
        return json_format.Parse(await request.body(), Payloads())
    except (json_format.ParseError, UnicodeDecodeError) as exc:
        raise HTTPException(422, f"not a Payloads message in proto JSON: {exc}") from exc


# Temporal's `Payloads` in proto JSON (the body is parsed by protobuf, so declared here for OpenAPI).
_PAYLOADS = {
    "type": "object",
    "properties": {
        "payloads": {
            "type": ["array", "null"],  # proto JSON: null is the empty list
            "items": {
                "type": "object",
                "properties": {
                    "metadata": {
                        "type": "object",
                        "additionalProperties": {"type": "string", "format": "byte"},
                    },
                    "data": {"type": "string", "format": "byte"},
                },
            },
        }
    },
}
_CODEC_ROUTE: dict[str, Any] = {
    "openapi_extra": {
        "requestBody": {"required": True, "content": {"application/json": {"schema": _PAYLOADS}}}
    },
    "responses": {
        200: {
            "description": "The payloads, encoded or decoded",
            "content": {"application/json": {"schema": _PAYLOADS}},
        },
        **error_responses(410, 422),
    },
}


def _answer(payloads: Payloads) -> Response:
    return Response(json_format.MessageToJson(payloads), media_type="application/json")


@router.post("/encode", **_CODEC_ROUTE)
async def encode(request: Request, res: ResourcesDep) -> Response:
    """Encrypt payloads with the current key."""
    payloads = await _payloads(request)
    return _answer(Payloads(payloads=await res.codec.encode(payloads.payloads)))


@router.post("/decode", **_CODEC_ROUTE)
async def decode(request: Request, res: ResourcesDep) -> Response:
    """Decrypt payloads (any key this deployment holds); unencrypted ones come back as they are."""
    payloads = await _payloads(request)
    try:
        return _answer(Payloads(payloads=await res.codec.decode(payloads.payloads)))
    except KeyShredded as exc:
        raise HTTPException(410, str(exc)) from exc
    except (UnknownPayloadKey, InvalidTag) as exc:
        raise HTTPException(422, f"cannot open these payloads: {exc or 'not sealed by this key'}") from exc
