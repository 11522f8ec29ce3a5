"""Who a request acts for: the tenant of its API key (`Authorization: Bearer tf_...`).

Every route but health needs a key; the scopes a route needs are declared where its router is
included (api/main.py). Another tenant's objects simply do not exist for a key: 404, never 403.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from activities.adapters.rate_limits import RateLimited
from activities.adapters.stream_tokens import QUERY_PARAM
from api.core.deps import PrincipalsDep, ResourcesDep
from api.core.errors import ApiError
from db.access import Principal, touch_key
from infra.config.residency import describe_gaps, residency_gaps
from infra.telemetry import metrics

DEFAULT_TENANT = "default"
KEY_USE_RESOLUTION_S = 60
_key_touched: dict[uuid.UUID, float] = {}  # key id → when this process last recorded its use
_bearer = HTTPBearer(auto_error=False, description="an API key: `turnflow keys create`")


def too_many(exc: RateLimited) -> HTTPException:
    metrics.rate_limited.add(1, {"limit": exc.what})
    retry_s = max(1, math.ceil(exc.retry_ms / 1000))
    return HTTPException(429, f"{exc}; retry in {retry_s} s", headers={"Retry-After": str(retry_s)})


BEARER_CHALLENGE = {"WWW-Authenticate": "Bearer"}


def _unauthorized(message: str) -> HTTPException:
    return HTTPException(401, message, headers=BEARER_CHALLENGE)


async def current_principal(
    request: Request,
    res: ResourcesDep,
    principals: PrincipalsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    if credentials is None:
        raise _unauthorized("an API key is required: Authorization: Bearer <key>")
    principal = await principals.find(credentials.credentials)
    if principal is None:
        raise _unauthorized("the API key is not valid (unknown, revoked or expired)")
    request.state.principal = principal
    if gaps := residency_gaps(principal.residency, res.policy.stores):
        # Hard, like the models' rule: never serve the tenant from a store its residency excludes.
        request.state.audit = {"refused": "residency_violation", "stores": gaps}
        raise ApiError(
            403,
            f"this deployment cannot hold tenant {principal.tenant_name!r}'s data "
            f"(residency {', '.join(sorted(principal.residency))}): {describe_gaps(gaps)}",
            code="residency_violation",
        )
    # `last used` to the minute: one write per key per minute and process, and no I/O otherwise.
    now = time.monotonic()
    if now - _key_touched.get(principal.key_id, -KEY_USE_RESOLUTION_S) >= KEY_USE_RESOLUTION_S:
        _key_touched[principal.key_id] = now
        await touch_key(res.sessions, principal.key_id)
    limit = principal.requests_per_min or res.settings.rate_limit_requests_per_min
    try:
        await res.rate_limits.request(str(principal.tenant_id), limit)
    except RateLimited as exc:
        raise too_many(exc) from exc
    return principal


PrincipalDep = Annotated[Principal, Depends(current_principal)]


@dataclass(frozen=True)
class StreamReader:
    tenant_id: uuid.UUID
    # Set when a stream token authorised the request: the one turn it may read.
    turn_id: str | None


async def stream_reader(
    request: Request,
    res: ResourcesDep,
    principals: PrincipalsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    stream_token: Annotated[
        str | None,
        Query(
            alias=QUERY_PARAM,
            max_length=100,
            description="instead of a key, for a browser's EventSource: the `stream_token` of the "
            "turn's `turn` event (or the POST's `X-Stream-Token`); reads that turn only, and expires",
        ),
    ] = None,
) -> StreamReader:
    """Who reads a turn's events: a key with the chat scope, or the turn's own stream token."""
    if credentials is not None or stream_token is None:
        principal = await current_principal(request, res, principals, credentials)
        if not principal.may("chat"):
            raise HTTPException(403, "this key lacks the scope for this route (one of: chat)")
        return StreamReader(principal.tenant_id, None)
    grant = await res.stream_tokens.read(stream_token)
    if grant is None:
        raise _unauthorized("the stream token is not valid (unknown, or expired): read the turn with a key")
    try:
        limit = grant.requests_per_min or res.settings.rate_limit_requests_per_min
        await res.rate_limits.request(str(grant.tenant_id), limit)
    except RateLimited as exc:
        raise too_many(exc) from exc
    return StreamReader(grant.tenant_id, grant.turn_id)


StreamReaderDep = Annotated[StreamReader, Depends(stream_reader)]


def require(*any_of: str) -> Callable[[Principal], Awaitable[None]]:
    """A dependency: the key must carry one of these scopes (or `admin`)."""

    async def check(principal: PrincipalDep) -> None:
        if not principal.may(*any_of):
            raise HTTPException(403, f"this key lacks the scope for this route (one of: {', '.join(any_of)})")

    return check


async def current_tenant(principal: PrincipalDep) -> uuid.UUID:
    return principal.tenant_id


TenantDep = Annotated[uuid.UUID, Depends(current_tenant)]


async def tokens_within_limit(res: ResourcesDep, principal: PrincipalDep) -> None:
    """Before a turn: has the tenant's token use within the window reached its limit?"""
    limit = principal.tokens_per_min or res.settings.rate_limit_tokens_per_min
    try:
        await res.rate_limits.tokens_allow(str(principal.tenant_id), limit)
    except RateLimited as exc:
        raise too_many(exc) from exc
