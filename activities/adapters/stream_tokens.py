"""Stream tokens: a short-lived credential that reads one turn's events and nothing else, for a
browser's `EventSource`, which cannot send an Authorization header, to reconnect by itself with
`Last-Event-ID` on `GET /v1/turns/{id}/events?stream_token=...`.

Opaque and random, kept in Redis (shared by every API process) under its SHA-256 only, and expiring
on their own. A token is minted by the POST that started the turn and handed to that client alone
(a response header and its `turn` event); it never enters the turn's history or its event log, and
telemetry drops it from recorded URLs.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import uuid
from dataclasses import dataclass

from redis.asyncio import Redis

PREFIX = "st_"
QUERY_PARAM = "stream_token"
_KEY = "turnflow:stream-token:"


@dataclass(frozen=True)
class StreamGrant:
    tenant_id: uuid.UUID
    turn_id: str
    # The tenant's request limit per minute when the token was minted (its reads count against it).
    requests_per_min: int | None


def _key(token: str) -> str:
    return _KEY + hashlib.sha256(token.encode()).hexdigest()


class StreamTokens:
    def __init__(self, redis: Redis, ttl_s: int) -> None:
        self.redis = redis
        self.ttl_s = ttl_s

    async def mint(self, grant: StreamGrant) -> str:
        token = PREFIX + secrets.token_urlsafe(24)
        value = {"tenant": str(grant.tenant_id), "turn": grant.turn_id, "rpm": grant.requests_per_min}
        await self.redis.set(_key(token), json.dumps(value), ex=self.ttl_s)
        return token

    async def read(self, token: str) -> StreamGrant | None:
        """The grant, or None when the token is unknown or expired."""
        if not token.startswith(PREFIX) or len(token) > 100:
            return None
        found = await self.redis.get(_key(token))
        if found is None:
            return None
        value = json.loads(found)
        return StreamGrant(uuid.UUID(value["tenant"]), value["turn"], value["rpm"])
