"""The router as a pure function: residency, budgets, fidelity, cost, canaries, breakers, replicas."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

import pytest

from activities.contracts.route import RouteRequest
from activities.logic.routing import NoEligibleModel, TenantPolicy, pick_replica, route
from infra.config.models import ModelSpec, check_registry

ON_PREM = TenantPolicy(residency=frozenset({"on-prem"}))
ANYWHERE = TenantPolicy()


def spec(**fields: Any) -> ModelSpec:
    base: dict[str, Any] = {
        "version": "1",
        "provider": "llamacpp",
        "endpoints": ["http://gpu-a:80"],
        "tier": "gpu",
        "context": 4096,
    }
    return ModelSpec.model_validate({**base, **fields})


def registry() -> dict[str, ModelSpec]:
    return {
        "managed-large": spec(
            provider="openai",
            tokenizer="embedded",
            endpoints=["https://api.example.com"],
            tier="managed",
            fidelity=30,
            typical_ttft_ms=400,
            cost={"input_per_1k": "0.0025", "output_per_1k": "0.01"},
            residency=["us"],
            fallback=["gpu-8b"],
        ),
        "gpu-8b": spec(
            endpoints=["http://gpu-a:80", "http://gpu-b:80", "http://gpu-c:80"],
            fidelity=20,
            typical_ttft_ms=250,
            cost={"input_per_1k": "0.0002", "output_per_1k": "0.0006"},
            residency=["on-prem", "eu"],
            fallback=["cpu-135m"],
        ),
        "cpu-135m": spec(
            endpoints=["http://cpu:80"],
            tier="cpu-quantized",
            context=2048,
            fidelity=1,
            typical_ttft_ms=60,
            cost={"input_per_1k": "0.00001", "output_per_1k": "0.00004"},
            residency=["on-prem", "eu"],
        ),
        "gpu-8b-next": spec(
            version="2",
            endpoints=["http://gpu-next:80"],
            fidelity=20,
            residency=["on-prem", "eu"],
            canary_of="gpu-8b",
            share=0.1,
            fallback=["cpu-135m"],
        ),
    }


def req(**fields: Any) -> RouteRequest:
    return RouteRequest.model_validate({"tenant_id": "t", "conversation_id": "c-1", **fields})


def everything_up(_: str) -> bool:
    return True


def no_canary() -> dict[str, float]:
    return {"gpu-8b-next": 0.0}


def test_without_constraints_the_highest_fidelity_model_serves_with_its_fallbacks() -> None:
    decision = route(registry(), req(), ANYWHERE, everything_up, shares=no_canary())
    assert decision.rule == "highest_fidelity"
    assert [t.name for t in decision.chain] == ["managed-large", "gpu-8b", "cpu-135m"]
    # The reply's room fits the smallest context in the chain; the prompt gets the rest.
    assert decision.max_tokens == 256 and decision.prompt_budget == 2048 - 256


def test_residency_is_hard_even_when_every_allowed_model_is_down() -> None:
    decision = route(registry(), req(), ON_PREM, everything_up, shares=no_canary())
    assert [t.name for t in decision.chain] == ["gpu-8b", "cpu-135m"]
    assert {"model": "managed-large", "reason": "residency: lacks on-prem"} in decision.skipped

    only_managed_up = {"https://api.example.com"}
    with pytest.raises(NoEligibleModel) as refused:
        route(registry(), req(), ON_PREM, lambda url: url in only_managed_up, shares=no_canary())
    assert refused.value.code == "model_unavailable" and refused.value.retryable


def test_a_tenant_no_model_may_serve_is_refused_for_good() -> None:
    with pytest.raises(NoEligibleModel) as refused:
        route(registry(), req(), TenantPolicy(residency=frozenset({"ap-south"})), everything_up)
    assert refused.value.code == "no_eligible_model" and not refused.value.retryable


def test_a_small_latency_budget_prefers_the_low_latency_tier() -> None:
    decision = route(registry(), req(latency_budget_ms=100), ANYWHERE, everything_up, shares=no_canary())
    assert decision.rule == "latency_budget" and decision.chain[0].name == "cpu-135m"
    roomy = route(registry(), req(latency_budget_ms=300), ANYWHERE, everything_up, shares=no_canary())
    assert roomy.chain[0].name == "gpu-8b"
    hopeless = route(registry(), req(latency_budget_ms=10), ANYWHERE, everything_up, shares=no_canary())
    assert hopeless.rule == "latency_budget_best_effort" and hopeless.chain[0].name == "cpu-135m"


def test_the_cost_ceiling_excludes_dearer_models() -> None:
    frugal = TenantPolicy(cost_ceiling_per_1k=Decimal("0.001"))
    decision = route(registry(), req(), frugal, everything_up, shares=no_canary())
    assert decision.chain[0].name == "gpu-8b"
    assert any(s["model"] == "managed-large" and s["reason"].startswith("cost") for s in decision.skipped)


def test_an_open_breaker_moves_the_turn_to_the_next_model_in_the_chain() -> None:
    gpu = set(registry()["gpu-8b"].endpoints)
    decision = route(registry(), req(), ON_PREM, lambda url: url not in gpu, shares=no_canary())
    assert [t.name for t in decision.chain] == ["cpu-135m"]
    assert {"model": "gpu-8b", "reason": "breaker open"} in decision.skipped


def test_a_request_may_name_a_model_it_is_allowed() -> None:
    named = route(registry(), req(requested_model="cpu-135m"), ON_PREM, everything_up, shares=no_canary())
    assert named.rule == "requested" and named.chain[0].name == "cpu-135m"
    refused = route(
        registry(), req(requested_model="managed-large"), ON_PREM, everything_up, shares=no_canary()
    )
    assert refused.chain[0].name == "gpu-8b" and "not available" in refused.reason


def test_max_tokens_is_capped_so_the_request_fits_the_context() -> None:
    decision = route(registry(), req(max_tokens=4000), ON_PREM, everything_up, shares=no_canary())
    assert decision.max_tokens == 1024 and decision.prompt_budget == 1024


def test_canary_share_is_within_tolerance_and_sticky_per_conversation() -> None:
    models = registry()
    conversations = [str(uuid.uuid4()) for _ in range(4000)]

    def served(conv: str, share: float) -> str:
        decision = route(
            models, req(conversation_id=conv), ON_PREM, everything_up, shares={"gpu-8b-next": share}
        )
        return decision.chain[0].name

    first = {c: served(c, 0.1) for c in conversations}
    on_canary = {c for c, name in first.items() if name == "gpu-8b-next"}
    assert abs(len(on_canary) / len(conversations) - 0.1) < 0.02
    assert all(served(c, 0.1) == first[c] for c in conversations[:500])  # sticky
    # Promoting further keeps every conversation already on the canary there.
    wider = {c for c in conversations if served(c, 0.3) == "gpu-8b-next"}
    assert on_canary <= wider and abs(len(wider) / len(conversations) - 0.3) < 0.03
    canary = route(models, req(conversation_id=next(iter(on_canary))), ON_PREM, everything_up)
    assert canary.rule == "canary" and [t.name for t in canary.chain] == ["gpu-8b-next", "gpu-8b", "cpu-135m"]
    assert canary.chain[0].canary and canary.chain[0].version == "2"
    # Rolled back (share 0): nobody is on it.
    assert all(served(c, 0.0) == "gpu-8b" for c in list(on_canary)[:100])


def test_replica_affinity_moves_only_the_leaving_or_joining_replicas_share() -> None:
    replicas = ["http://gpu-a:80", "http://gpu-b:80", "http://gpu-c:80"]
    conversations = [str(uuid.uuid4()) for _ in range(3000)]
    before = {c: pick_replica(c, replicas) for c in conversations}
    counts = {r: sum(1 for v in before.values() if v == r) for r in replicas}
    assert all(800 < n < 1200 for n in counts.values()), counts

    without_b = {c: pick_replica(c, [r for r in replicas if r != "http://gpu-b:80"]) for c in conversations}
    moved = {c for c in conversations if without_b[c] != before[c]}
    assert moved == {c for c in conversations if before[c] == "http://gpu-b:80"}

    joined = {c: pick_replica(c, [*replicas, "http://gpu-d:80"]) for c in conversations}
    moved = {c for c in conversations if joined[c] != before[c]}
    assert all(joined[c] == "http://gpu-d:80" for c in moved) and 550 < len(moved) < 950

    # Routing uses it: a conversation's turns go to the same replica of the same model.
    down_b = route(registry(), req(conversation_id="c-9"), ON_PREM, lambda u: u != "http://gpu-b:80")
    assert down_b.chain[0].endpoint != "http://gpu-b:80"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"gpu-8b": {"fallback": ["nope"]}}, "unknown model 'nope'"),
        ({"cpu-135m": {"fallback": ["gpu-8b"]}}, "loops back"),
        ({"gpu-8b-next": {"canary_of": "ghost"}}, "unknown model 'ghost'"),
    ],
)
def test_the_registry_refuses_broken_references(change: dict[str, dict[str, Any]], message: str) -> None:
    models = registry()
    for name, fields in change.items():
        models[name] = models[name].model_copy(update=fields)
    with pytest.raises(ValueError, match=message):
        check_registry(models)
