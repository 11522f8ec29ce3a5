"""A Temporal codec server: the web UI (and `temporal` CLI) send encrypted payloads here to have them
decoded for an operator holding an admin key. Temporal's remote codec protocol: POST a `Payloads`
message as proto JSON, get one back."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request, Response
from google.protobuf import json_format
from temporalio.api.common.v1 import Payloads

from api.deps import ResourcesDep

router = APIRouter(prefix="/codec", tags=["codec"])


async def _payloads(request: Request) -> Payloads:
    try:
        return json_format.Parse(await request.body(), Payloads())
    except json_format.ParseError as exc:
        raise HTTPException(422, f"not a Payloads message in proto JSON: {exc}") from exc


def _answer(payloads: Payloads) -> Response:
    return Response(json_format.MessageToJson(payloads), media_type="application/json")


@router.post("/encode")
async def encode(request: Request, res: ResourcesDep) -> Response:
    """Encrypt payloads with the current key."""
    payloads = await _payloads(request)
    return _answer(Payloads(payloads=await res.codec.encode(payloads.payloads)))


@router.post("/decode")
async def decode(request: Request, res: ResourcesDep) -> Response:
    """Decrypt payloads (any key this deployment holds); unencrypted ones come back as they are."""
    payloads = await _payloads(request)
    return _answer(Payloads(payloads=await res.codec.decode(payloads.payloads)))
