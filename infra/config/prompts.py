"""Prompt templates as temporal.yaml declares them (``prompts:``): the system prompt of each version,
and canaries of a template that take a share of its conversations, sticky per conversation, like
model canaries (activities/logic/routing.py)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

DEFAULT_SYSTEM_PROMPT = (
    "You are a helpful assistant. Answer briefly and accurately. "
    "If context passages are given, base your answer on them and cite them as [1], [2]."
)


class PromptSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    system: str = Field(min_length=1)
    # A canary of another template takes `share` of that template's conversations.
    canary_of: str | None = None
    share: float = Field(default=0.0, ge=0, le=1)

    @property
    def is_canary(self) -> bool:
        return self.canary_of is not None


DEFAULT_PROMPTS = {"chat-v1": PromptSpec(system=DEFAULT_SYSTEM_PROMPT)}


def check_prompts(prompts: dict[str, PromptSpec]) -> None:
    bases = [name for name, spec in prompts.items() if not spec.is_canary]
    if len(bases) != 1:
        raise ValueError(f"prompts: exactly one template has no canary_of (found {len(bases)})")
    for name, spec in prompts.items():
        if spec.canary_of is not None and spec.canary_of not in bases:
            raise ValueError(f"prompts.{name}.canary_of must name the base template {bases[0]!r}")


def base_prompt(prompts: dict[str, PromptSpec]) -> str:
    return next(name for name, spec in prompts.items() if not spec.is_canary)
