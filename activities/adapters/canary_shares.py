"""Canary shares as changed at runtime: one Redis hash that every worker reads on every turn.

A field is a model canary's name, or `prompt:NAME` for a prompt template's canary. Written by
`turnflow models promote|rollback|rollout` and by canary rollouts (workflows/canary_rollout.py),
each change audited with the share before and after. A field that is absent means the share
temporal.yaml declares.
"""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from activities.logic.routing import CanaryKind, share_field
from db.models import AuditEvent

SHARES_KEY = "turnflow:models:shares"


async def runtime_shares(redis: Redis) -> dict[str, float]:
    raw = await redis.hgetall(SHARES_KEY)
    return {(k.decode() if isinstance(k, bytes) else k): float(v) for k, v in raw.items()}


async def change_share(
    redis: Redis,
    sessions: async_sessionmaker[AsyncSession],
    *,
    kind: CanaryKind,
    name: str,
    version: str,
    base: str,
    declared: float,
    share: float,
    actor: str,
    action: str,
    details: dict[str, Any] | None = None,
) -> float:
    """Set the share for every worker at once and audit it (`models.ACTION` or `prompts.ACTION`);
    returns the share before."""
    field = share_field(kind, name)
    before = (await runtime_shares(redis)).get(field, declared)
    await redis.hset(SHARES_KEY, field, str(share))
    async with sessions.begin() as session:
        session.add(
            AuditEvent(
                actor=actor,
                action=f"{'models' if kind == 'model' else 'prompts'}.{action}",
                object_type=kind if kind == "model" else "prompt_template",
                object_id=f"{name}@{version}",
                details={"share_before": before, "share_after": share, "base": base, **(details or {})},
            )
        )
    return before
