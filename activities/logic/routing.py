"""Which model serves a turn, and what it falls back to: a pure function of the registry, the tenant's
policy, the request and endpoint health. The decision (the rule that fired, the chain, what was
skipped and why) is recorded on the turn.

Rules, in order:
1. residency is hard: a model serves a tenant only if it carries every residency tag the tenant
   requires (an on-prem tenant never reaches a managed API, even when every on-prem model is down);
   the tenant's cost ceiling (per 1k output tokens) is hard too;
2. a request may name a model (`requested`);
3. with a latency budget, the best model whose typical first-token time fits (`latency_budget`), or
   the fastest one when none fits (`latency_budget_best_effort`);
4. otherwise the highest-fidelity healthy model (`highest_fidelity`);
5. a canary of the chosen model takes its share of conversations, sticky per conversation (`canary`);
   a canary of the prompt template does the same with its own buckets (`prompt_arm`), so a
   conversation's model arm and prompt arm are drawn independently;
6. the chain goes on with the chosen model's declared fallbacks (transitively), skipping models whose
   every endpoint's breaker is open; each model's replica is picked by rendezvous hashing of the
   conversation id, so a conversation stays on one replica and a replica leaving or joining moves
   only its own share.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Literal

from activities.contracts.route import ModelTarget, RouteDecision, RouteRequest
from infra.config.models import ModelSpec
from infra.config.prompts import DEFAULT_PROMPTS, PromptSpec, base_prompt

CANARY_BUCKETS = 10_000
PROMPT_PREFIX = "prompt:"

CanaryKind = Literal["model", "prompt"]


def share_field(kind: CanaryKind, name: str) -> str:
    """Where a canary's runtime share is kept (activities/adapters/canary_shares.py)."""
    return name if kind == "model" else f"{PROMPT_PREFIX}{name}"


@dataclass(frozen=True)
class TenantPolicy:
    residency: frozenset[str] = frozenset()
    cost_ceiling_per_1k: Decimal | None = None
    daily_token_budget: int | None = None
    # The response cache: `auto` serves repeatable requests (temperature 0), `exact` every request
    # whose key matches (the tenant accepts a repeated answer at any temperature), `off` none.
    response_cache: str = "auto"
    # Answer from the retrieved passages when no model can (activities/chat/sources_answer.py).
    degraded_answers: bool = True
    # Out-of-band moderation: the categories it enforces (empty: all), and with no verdict whether
    # the reply stays (`open`) or goes (`closed`); None: the deployment's choice (temporal.yaml).
    moderation_categories: tuple[str, ...] = ()
    moderation_failure: str | None = None

    @classmethod
    def from_row(cls, residency: Iterable[str], settings: dict[str, object]) -> TenantPolicy:
        ceiling = settings.get("cost_ceiling_per_1k_tokens")
        budget = settings.get("daily_token_budget")
        cache = str(settings.get("response_cache") or "auto")
        return cls(
            residency=frozenset(residency),
            cost_ceiling_per_1k=Decimal(str(ceiling)) if ceiling is not None else None,
            daily_token_budget=int(str(budget)) if budget is not None else None,
            response_cache=cache if cache in ("auto", "exact", "off") else "auto",
            degraded_answers=settings.get("degraded_answers", True) is not False,
            moderation_categories=tuple(str(c) for c in _listed(settings.get("moderation_categories"))),
            moderation_failure=failure
            if (failure := settings.get("moderation_failure")) in ("open", "closed")
            else None,
        )


def _listed(value: object) -> list[object]:
    return list(value) if isinstance(value, list | tuple) else []


class NoEligibleModel(Exception):
    def __init__(self, code: str, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.code = code
        self.retryable = retryable


def _digest(*parts: str) -> int:
    # Stable across processes and restarts (Python's hash() is salted per process).
    return int.from_bytes(hashlib.blake2b("\x1f".join(parts).encode(), digest_size=8).digest(), "big")


def pick_replica(conversation_id: str, endpoints: list[str]) -> str:
    """Rendezvous (highest random weight) hashing: the replica scoring highest for this conversation."""
    return max(endpoints, key=lambda url: (_digest(conversation_id, url), url))


def canary_bucket(conversation_id: str, base_model: str) -> int:
    return _digest("canary", base_model, conversation_id) % CANARY_BUCKETS


def prompt_arm(
    prompts: dict[str, PromptSpec], conversation_id: str, shares: dict[str, float]
) -> dict[str, str]:
    """The prompt template this conversation is assigned: the base, or the canary its bucket falls in."""
    base = base_prompt(prompts)
    bucket, edge = canary_bucket(conversation_id, share_field("prompt", base)), 0.0
    for name, spec in sorted(prompts.items()):
        share = shares.get(share_field("prompt", name), spec.share)
        if spec.canary_of != base or share <= 0:
            continue
        edge += share * CANARY_BUCKETS
        if bucket < edge:
            return {"base": base, "template": name}
    return {"base": base, "template": base}


@dataclass
class _Router:
    models: dict[str, ModelSpec]
    tenant: TenantPolicy
    available: Callable[[str], bool]
    shares: dict[str, float]
    skipped: list[dict[str, str]] = field(default_factory=list)

    def refusal(self, name: str) -> str | None:
        spec = self.models[name]
        if missing := self.tenant.residency - set(spec.residency):
            return f"residency: lacks {', '.join(sorted(missing))}"
        ceiling = self.tenant.cost_ceiling_per_1k
        if ceiling is not None and spec.cost.output_per_1k > ceiling:
            return f"cost: {spec.cost.output_per_1k}/1k over the tenant's ceiling {ceiling}"
        return None

    def live_endpoints(self, name: str) -> list[str]:
        return [url for url in self.models[name].endpoints if self.available(url)]

    def usable(self, name: str) -> bool:
        if reason := self.refusal(name):
            self.skipped.append({"model": name, "reason": reason})
            return False
        if not self.live_endpoints(name):
            self.skipped.append({"model": name, "reason": "breaker open"})
            return False
        return True

    def share(self, name: str) -> float:
        return self.shares.get(name, self.models[name].share)

    def canary_for(self, base: str, conversation_id: str) -> str | None:
        """The canary this conversation's bucket falls in, usable or not (the experiment's arm)."""
        bucket, edge = canary_bucket(conversation_id, base), 0.0
        for name, spec in sorted(self.models.items()):
            if spec.canary_of != base or self.share(name) <= 0:
                continue
            edge += self.share(name) * CANARY_BUCKETS
            if bucket < edge:
                return name
        return None

    def chain_after(self, first: str) -> list[str]:
        chain, frontier = [first], list(self.models[first].fallback)
        while frontier:
            name = frontier.pop(0)
            if name in chain:
                continue
            if self.usable(name):
                chain.append(name)
            frontier.extend(self.models[name].fallback)
        return chain


def _best(models: dict[str, ModelSpec], names: list[str]) -> str:
    # Fidelity first; among equals the cheaper, then the name (so the choice never depends on order).
    return max(names, key=lambda n: (models[n].fidelity, -models[n].cost.output_per_1k, n))


def route(
    models: dict[str, ModelSpec],
    request: RouteRequest,
    tenant: TenantPolicy,
    available: Callable[[str], bool],
    *,
    shares: dict[str, float] | None = None,
    default_max_tokens: int = 256,
    prompts: dict[str, PromptSpec] | None = None,
) -> RouteDecision:
    """The turn's model chain. Raises NoEligibleModel when no model may, or can, serve it."""
    router = _Router(models, tenant, available, shares or {})
    bases = [n for n, spec in models.items() if not spec.is_canary]
    allowed = [n for n in bases if router.refusal(n) is None]
    if not allowed:
        residency = ", ".join(sorted(tenant.residency)) or "none"
        raise NoEligibleModel(
            "no_eligible_model",
            f"no configured model meets this tenant's policy (residency: {residency}; "
            f"cost ceiling: {tenant.cost_ceiling_per_1k})",
            retryable=False,
        )
    healthy = [n for n in bases if router.usable(n)]
    if not healthy:
        raise NoEligibleModel(
            "model_unavailable",
            "every model this tenant may use is unavailable (circuit open); try again shortly",
            retryable=True,
        )

    requested = request.requested_model
    if requested in healthy:
        primary, rule, reason = requested, "requested", f"the request named {requested}"
    elif request.latency_budget_ms is not None:
        budget = request.latency_budget_ms
        fits = [n for n in healthy if models[n].typical_ttft_ms <= budget]
        if fits:
            primary, rule = _best(models, fits), "latency_budget"
            reason = f"best model with a typical first token within {budget} ms"
        else:
            primary = min(healthy, key=lambda n: (models[n].typical_ttft_ms, n))
            rule, reason = "latency_budget_best_effort", f"no model is typically within {budget} ms"
    else:
        primary, rule = _best(models, healthy), "highest_fidelity"
        reason = "highest-fidelity healthy model within the tenant's policy"
    if requested and requested != primary:
        reason += f" (requested {requested!r}: not available to this tenant)"

    names = router.chain_after(primary)
    # The experiment arm is the assignment, kept even when the canary cannot serve (its breaker is
    # open): reports compare arms as assigned (intent to treat), so a failing canary's turns count
    # against it rather than vanishing into the base's.
    assigned = router.canary_for(primary, request.conversation_id)
    if assigned and router.usable(assigned):
        names.insert(0, assigned)
        rule, reason = (
            "canary",
            f"canary of {primary} ({router.share(assigned):.0%} of conversations); {reason}",
        )

    chain = []
    for name in names:
        spec = models[name]
        chain.append(
            ModelTarget(
                name=name,
                version=spec.version,
                provider=spec.provider,
                tier=spec.tier,
                endpoint=pick_replica(request.conversation_id, router.live_endpoints(name)),
                context=spec.context,
                canary=spec.is_canary,
                input_per_1k=spec.cost.input_per_1k,
                output_per_1k=spec.cost.output_per_1k,
            )
        )
    first = models[names[0]]
    smallest_context = min(t.context for t in chain)
    caps = [
        request.max_tokens or first.params.max_tokens or default_max_tokens,
        smallest_context // 2,
        *(models[n].max_output_tokens for n in names if models[n].max_output_tokens),
    ]
    max_tokens = min(c for c in caps if c)
    return RouteDecision(
        chain=chain,
        rule=rule,
        reason=reason,
        skipped=list({s["model"]: s for s in router.skipped}.values()),
        max_tokens=max_tokens,
        prompt_budget=smallest_context - max_tokens,
        arm={"base": primary, "model": assigned or primary},
        prompt_arm=prompt_arm(prompts or DEFAULT_PROMPTS, request.conversation_id, shares or {}),
    )
