"""temporal.yaml `moderation:`: which moderator checks replies out of band, and what happens when it
cannot give a verdict (activities/adapters/moderators.py)."""

from __future__ import annotations

from datetime import timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from infra.config.durations import Duration

# Llama Guard 3's hazard taxonomy (MLCommons): the categories a Llama Guard-style prompt lists.
LLAMA_GUARD_CATEGORIES = {
    "S1": "Violent Crimes",
    "S2": "Non-Violent Crimes",
    "S3": "Sex-Related Crimes",
    "S4": "Child Sexual Exploitation",
    "S5": "Defamation",
    "S6": "Specialized Advice",
    "S7": "Privacy",
    "S8": "Intellectual Property",
    "S9": "Indiscriminate Weapons",
    "S10": "Hate",
    "S11": "Suicide & Self-Harm",
    "S12": "Sexual Content",
    "S13": "Elections",
    "S14": "Code Interpreter Abuse",
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LlamaGuardSpec(_Strict):
    # A chat model of the registry (`models:`), prompted with the classifier's template through its
    # own adapter.
    model: str
    # The prompt's version, recorded with each verdict beside the model's.
    prompt_version: str = "guard-v1"
    categories: dict[str, str] = Field(default_factory=lambda: dict(LLAMA_GUARD_CATEGORIES))
    # Ask for the verdict as JSON constrained to a schema (servers that constrain output: llama.cpp,
    # vLLM, TGI), for a chat model that is not a trained classifier; false: Llama Guard's own
    # `safe` / `unsafe` + categories text.
    constrained: bool = False
    max_tokens: int = Field(default=64, gt=0)


class OpenAIModerationSpec(_Strict):
    # An OpenAI-compatible server: POST {url}/v1/moderations.
    url: str = Field(pattern=r"^https?://")
    model: str = "omni-moderation-latest"
    # The environment variable holding its key (keys never live in this file).
    api_key_env: str | None = None


class ModerationPolicy(_Strict):
    moderator: Literal["rules", "llama_guard", "openai"] = "rules"
    # One verdict's call, under the moderate_message activity's own timeout and retries.
    timeout: Duration = timedelta(seconds=10)
    # No verdict after the moderate_message retries: keep the reply (`open`) or redact it (`closed`);
    # a tenant's policy `moderation_failure` chooses for itself.
    on_failure: Literal["open", "closed"] = "open"
    llama_guard: LlamaGuardSpec | None = None
    openai: OpenAIModerationSpec | None = None

    @model_validator(mode="after")
    def _configured(self) -> ModerationPolicy:
        if self.moderator != "rules" and getattr(self, self.moderator) is None:
            raise ValueError(f"moderation: moderator {self.moderator} needs its `{self.moderator}:` section")
        return self
