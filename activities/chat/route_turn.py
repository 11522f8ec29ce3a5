"""The route step, part of the turn's prepare step (activities/chat/prepare_turn.py): gather what
routing needs (the tenant's policy, breaker states, canary shares, the tenant's tokens today), then
decide with the pure router. Its decision lands in the turn's history, in the prepare step's result."""

from __future__ import annotations

import asyncio
import time
import uuid

from redis.asyncio import Redis
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.exceptions import ApplicationError

from activities.adapters.breaker import BreakerView, CircuitBreakers
from activities.adapters.canary_shares import runtime_shares
from activities.adapters.model_registry import ModelRegistry
from activities.adapters.outages import REDIS_UNAVAILABLE, degraded
from activities.contracts.route import RouteDecision, RouteRequest
from activities.logic.routing import NoEligibleModel, TenantPolicy, route
from db.models import AuditEvent, Message, Tenant
from infra.config.prompts import PromptSpec

TENANT_POLICY_TTL_S = 5.0


class RouteActivities:
    def __init__(
        self,
        registry: ModelRegistry,
        breakers: CircuitBreakers,
        sessions: async_sessionmaker[AsyncSession],
        redis: Redis,
        default_max_tokens: int,
        prompts: dict[str, PromptSpec] | None = None,
    ) -> None:
        self.registry = registry
        self.prompts = prompts
        self.breakers = breakers
        self.sessions = sessions
        self.redis = redis
        self.default_max_tokens = default_max_tokens
        self._tenants: dict[str, tuple[float, TenantPolicy]] = {}

    async def tenant_policy(self, tenant_id: str) -> TenantPolicy:
        # Cached briefly: a policy change applies within seconds, without a query per turn.
        cached = self._tenants.get(tenant_id)
        if cached and time.monotonic() - cached[0] < TENANT_POLICY_TTL_S:
            return cached[1]
        async with self.sessions() as session:
            row = (
                await session.execute(
                    select(Tenant.residency_tags, Tenant.settings).where(Tenant.id == uuid.UUID(tenant_id))
                )
            ).one_or_none()
        policy = TenantPolicy.from_row(row[0], row[1]) if row else TenantPolicy()
        self._tenants[tenant_id] = (time.monotonic(), policy)
        return policy

    async def _breaker_views(self) -> dict[str, BreakerView]:
        try:
            return await self.breakers.views(self.registry.endpoints())
        except REDIS_UNAVAILABLE as exc:
            # Routing fails open: a Redis outage must not take every model down with it.
            degraded("circuit breakers read as closed for routing", exc)
            return dict.fromkeys(self.registry.endpoints(), BreakerView("closed"))

    async def _runtime_shares(self) -> dict[str, float]:
        try:
            return await runtime_shares(self.redis)
        except REDIS_UNAVAILABLE as exc:
            degraded("canary shares as declared in temporal.yaml", exc)
            return {}

    async def tokens_today(self, tenant_id: str) -> int:
        async with self.sessions() as session:
            used = await session.scalar(
                select(
                    func.coalesce(
                        func.sum(
                            func.coalesce(Message.input_tokens, 0) + func.coalesce(Message.output_tokens, 0)
                        ),
                        0,
                    )
                ).where(
                    Message.tenant_id == uuid.UUID(tenant_id),
                    Message.role == "assistant",
                    Message.created_at >= func.date_trunc("day", func.now()),
                )
            )
        return int(used or 0)

    async def _audit_refusal(self, req: RouteRequest, code: str, details: dict[str, object]) -> None:
        """A refused turn (residency, budget, no model) is an audited decision, not just an error."""
        async with self.sessions.begin() as session:
            session.add(
                AuditEvent(
                    tenant_id=uuid.UUID(req.tenant_id),
                    actor="router",
                    action=f"routing.refused.{code}",
                    object_type="turn",
                    object_id=req.turn_id,
                    details=details,
                )
            )

    async def route_turn(self, req: RouteRequest) -> RouteDecision:
        tenant = await self.tenant_policy(req.tenant_id)
        if tenant.daily_token_budget is not None:
            used = await self.tokens_today(req.tenant_id)
            if used >= tenant.daily_token_budget:
                await self._audit_refusal(req, "token_budget_exceeded", {"used": used})
                raise ApplicationError(
                    f"this tenant has used {used} of its {tenant.daily_token_budget} tokens today; "
                    "try again tomorrow or raise the budget",
                    "token_budget_exceeded",
                    False,
                    type="RouteRefused",
                    non_retryable=True,
                )
        # Breaker states and canary shares in one concurrent round: routing sits before the first token.
        views, shares = await asyncio.gather(self._breaker_views(), self._runtime_shares())
        try:
            return route(
                self.registry.models,
                req,
                tenant,
                lambda url: views[url].admits,
                shares=shares,
                default_max_tokens=self.default_max_tokens,
                prompts=self.prompts,
            )
        except NoEligibleModel as exc:
            await self._audit_refusal(
                req, exc.code, {"residency": sorted(tenant.residency), "reason": str(exc)}
            )
            if exc.code == "model_unavailable" and tenant.degraded_answers:
                # Every circuit is open: the chain as it would be, for an answer from the sources.
                decision = route(
                    self.registry.models,
                    req,
                    tenant,
                    lambda url: True,
                    shares=shares,
                    default_max_tokens=self.default_max_tokens,
                    prompts=self.prompts,
                )
                return decision.model_copy(update={"unavailable": str(exc)})
            raise ApplicationError(
                str(exc), exc.code, exc.retryable, type="RouteRefused", non_retryable=True
            ) from exc
