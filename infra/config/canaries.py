"""Every canary temporal.yaml declares, of a model or of a prompt template: what experiments report
on and rollouts move (db/experiments.py, workflows/canary_rollout.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from infra.config.models import ModelSpec
from infra.config.prompts import PromptSpec


@dataclass(frozen=True)
class Canary:
    name: str
    kind: Literal["model", "prompt"]
    base: str
    version: str
    declared_share: float


def declared_canaries(models: dict[str, ModelSpec], prompts: dict[str, PromptSpec]) -> dict[str, Canary]:
    found = {
        name: Canary(name, "model", spec.canary_of, spec.version, spec.share)
        for name, spec in models.items()
        if spec.canary_of is not None
    }
    found |= {
        # A template's name is its version (what each reply records as prompt_template_version).
        name: Canary(name, "prompt", spec.canary_of, name, spec.share)
        for name, spec in prompts.items()
        if spec.canary_of is not None
    }
    return dict(sorted(found.items()))
