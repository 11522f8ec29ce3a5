"""Experiments (operators): a canary model or prompt template against its base, arm by arm
(db/experiments.py)."""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query

from api.core.deps import ResourcesDep
from api.core.errors import error_responses
from api.core.tenancy import require
from db.experiments import experiment_report
from infra.config.canaries import Canary, declared_canaries
from infra.runtime.resources import Resources

router = APIRouter(tags=["experiments"], dependencies=[Depends(require("operator"))])


def canaries(res: Resources) -> dict[str, Canary]:
    return declared_canaries(res.registry.models, res.policy.prompts)


@router.get("/v1/experiments", responses=error_responses(403))
async def list_experiments(res: ResourcesDep) -> dict[str, Any]:
    """The experiments this deployment declares: each canary (a model or a prompt template) with its base."""
    return {"experiments": [{"name": c.name, "kind": c.kind, "base": c.base} for c in canaries(res).values()]}


@router.get("/v1/experiments/{name}", responses=error_responses(403, 404, 422))
async def read_experiment(
    res: ResourcesDep,
    name: Annotated[
        str, Path(max_length=200, description="a canary model or prompt template (one with canary_of)")
    ],
    since: Annotated[
        datetime | None, Query(description="ISO 8601; default: temporal.yaml's window ago")
    ] = None,
    until: Annotated[datetime | None, Query(description="ISO 8601, exclusive; default: now")] = None,
) -> dict[str, Any]:
    """Per arm: turns, errors, moderation flags, TTFT and turn p95, output tokens, cost per 1k
    messages, feedback rate, mean score with its interval, and thumbs-down reasons; then each
    difference with its test, p-value and whether it is significant."""
    canary = canaries(res).get(name)
    if canary is None:
        raise HTTPException(
            404, f"no experiment named {name!r}: it must be a canary model or prompt in temporal.yaml"
        )
    policy = res.policy.experiments
    end = (until or datetime.now(UTC)).astimezone(UTC)
    start = since.astimezone(UTC) if since else end - policy.window
    if start >= end:
        raise HTTPException(422, "since must be before until")
    async with res.sessions() as session:
        report = await experiment_report(session, name, canary.base, start, end, policy, canary.kind)
    return asdict(report)
