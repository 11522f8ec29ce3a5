"""WebSocket tickets: a browser cannot set an Authorization header on a WebSocket, and a long-lived
key must never travel in a URL. So a page asks for a ticket over HTTP with its key, and opens
`/v1/ws?ticket=...` within a minute; the ticket works once. Kept in Redis under its SHA-256 only."""

from __future__ import annotations

import hashlib
import json
import secrets
import uuid
from dataclasses import asdict
from datetime import datetime
from typing import Any

from redis.asyncio import Redis

from db.access import Principal

PREFIX = "wst_"
TTL_S = 60
_KEY = "turnflow:ws-ticket:"


def _key(ticket: str) -> str:
    return _KEY + hashlib.sha256(ticket.encode()).hexdigest()


def _dump(principal: Principal) -> str:
    def plain(value: Any) -> Any:
        if isinstance(value, uuid.UUID | datetime):
            return str(value) if isinstance(value, uuid.UUID) else value.isoformat()
        if isinstance(value, frozenset | tuple):
            return sorted(value) if isinstance(value, frozenset) else list(value)
        return value

    return json.dumps({k: plain(v) for k, v in asdict(principal).items()})


def _load(raw: str | bytes) -> Principal:
    v = json.loads(raw)
    return Principal(
        tenant_id=uuid.UUID(v["tenant_id"]),
        tenant_name=v["tenant_name"],
        key_id=uuid.UUID(v["key_id"]),
        key_prefix=v["key_prefix"],
        scopes=frozenset(v["scopes"]),
        requests_per_min=v["requests_per_min"],
        tokens_per_min=v["tokens_per_min"],
        pii=v["pii"],
        residency=frozenset(v["residency"]),
        webhook_hosts=tuple(v["webhook_hosts"]),
        expires_at=datetime.fromisoformat(v["expires_at"]) if v["expires_at"] else None,
    )


class WsTickets:
    def __init__(self, redis: Redis, ttl_s: int = TTL_S) -> None:
        self.redis = redis
        self.ttl_s = ttl_s

    async def issue(self, principal: Principal) -> str:
        ticket = PREFIX + secrets.token_urlsafe(24)
        await self.redis.set(_key(ticket), _dump(principal), ex=self.ttl_s)
        return ticket

    async def redeem(self, ticket: str) -> Principal | None:
        """The key's principal, once: a second use, an unknown or an expired ticket is None."""
        if not ticket.startswith(PREFIX) or len(ticket) > 100:
            return None
        found = await self.redis.getdel(_key(ticket))
        return _load(found) if found is not None else None
