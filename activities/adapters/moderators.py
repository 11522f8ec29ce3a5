"""Moderators: who checks a reply out of band (temporal.yaml `moderation:`).

- `rules`: the safety rules' moderation patterns (activities/logic/safety.yaml), offline;
- `llama_guard`: a chat model of the registry prompted with a Llama Guard-style classifier template,
  through the model's own adapter (so any server turnflow speaks to can host it); per-category
  verdicts (S1..S14);
- `openai`: an OpenAI-compatible `/v1/moderations` endpoint.

Each gives a ModerationVerdict naming itself and its version, or raises ModeratorUnavailable (the
moderate_message step retries; past its retries, the tenant's fail-open or fail-closed choice holds).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx

from activities.adapters.model_registry import ModelRegistry
from activities.contracts.sampling import JsonSchemaFormat, ResponseFormat, Sampling
from activities.logic.safety import SafetyEngine
from infra.config.moderation import LlamaGuardSpec, ModerationPolicy, OpenAIModerationSpec


class ModeratorUnavailable(Exception):
    """No verdict: the moderator failed, timed out, or answered something that is not one."""


@dataclass(frozen=True)
class ModerationVerdict:
    flagged: bool
    moderator: str
    version: str
    # The categories it flagged (all of them; the tenant's policy says which it enforces).
    categories: list[str] = field(default_factory=list)

    def record(self) -> dict[str, Any]:
        return {
            "moderator": self.moderator,
            "version": self.version,
            "flagged": self.flagged,
            "categories": self.categories,
        }


class Moderator(Protocol):
    name: str

    async def check(self, text: str, question: str | None) -> ModerationVerdict: ...


class RulesModerator:
    name = "rules"

    def __init__(self, safety: SafetyEngine) -> None:
        self.safety = safety

    async def check(self, text: str, question: str | None) -> ModerationVerdict:
        verdict = self.safety.moderate(text)
        categories = [] if verdict.allowed else [str(verdict.rule)]
        return ModerationVerdict(not verdict.allowed, self.name, self.safety.version, categories)


_GUARD_TEMPLATE = (
    (
        "Task: Check if there is unsafe content in 'Agent' messages in conversations according to our"
        " safety policy with the below categories."
    )
    + """

<BEGIN UNSAFE CONTENT CATEGORIES>
{categories}
<END UNSAFE CONTENT CATEGORIES>

<BEGIN CONVERSATION>

User: {question}

Agent: {reply}

<END CONVERSATION>

Provide your safety assessment for ONLY THE LAST Agent message in the above conversation:
- First line must read 'safe' or 'unsafe'.
- If unsafe, a second line must include a comma-separated list of violated categories."""
)

_CODE = re.compile(r"\bS\d{1,2}\b")


def parse_guard_output(text: str, categories: dict[str, str]) -> tuple[bool, list[str]]:
    """(flagged, categories) from Llama Guard's text (`safe`, or `unsafe` and a line of codes) or
    the constrained JSON form; raises ModeratorUnavailable for anything else."""
    stripped = text.strip()
    if stripped.startswith("{"):
        try:
            found = json.loads(stripped)
            verdict, codes = str(found["verdict"]), [str(c) for c in found.get("categories") or []]
        except (ValueError, KeyError, TypeError) as exc:
            raise ModeratorUnavailable(f"the classifier's JSON is not a verdict: {stripped[:80]!r}") from exc
    else:
        lines = [line.strip() for line in stripped.splitlines() if line.strip()]
        verdict = lines[0].lower().rstrip(".") if lines else ""
        codes = _CODE.findall(" ".join(lines[1:]))
    if verdict == "safe":
        return False, []
    if verdict == "unsafe":
        known = [c for c in codes if c in categories]
        return True, known or ["unspecified"]
    raise ModeratorUnavailable(f"the classifier answered no verdict: {stripped[:80]!r}")


class LlamaGuardModerator:
    name = "llama_guard"

    def __init__(self, spec: LlamaGuardSpec, registry: ModelRegistry, timeout_s: float) -> None:
        self.spec = spec
        self.registry = registry
        self.timeout_s = timeout_s

    @property
    def version(self) -> str:
        model = self.registry.spec(self.spec.model)
        return f"{self.spec.model}@{model.version}/{self.spec.prompt_version}"

    def _sampling(self) -> Sampling | None:
        if not self.spec.constrained:
            return None
        schema = {
            "type": "object",
            "properties": {
                "verdict": {"enum": ["safe", "unsafe"]},
                # Bounded, so that a whole verdict fits in the classifier's few tokens.
                "categories": {"type": "array", "items": {"enum": list(self.spec.categories)}, "maxItems": 4},
            },
            "required": ["verdict", "categories"],
            "additionalProperties": False,
        }
        fmt = ResponseFormat(type="json_schema", json_schema=JsonSchemaFormat(name="verdict", schema=schema))
        return Sampling(response_format=fmt)

    async def check(self, text: str, question: str | None) -> ModerationVerdict:
        adapter = self.registry.adapter(self.spec.model)
        endpoint = self.registry.spec(self.spec.model).endpoints[0]
        prompt = _GUARD_TEMPLATE.format(
            categories="\n".join(f"{code}: {name}." for code, name in self.spec.categories.items()),
            question=question or "",
            reply=text,
        )
        parts = []
        messages = [{"role": "user", "content": prompt}]
        try:
            async with asyncio.timeout(self.timeout_s):
                async for delta in adapter.stream_chat(
                    endpoint, messages, self.spec.max_tokens, 0.0, self._sampling()
                ):
                    parts.append(delta.text)
        except Exception as exc:  # any failure of the model call, its timeout included: no verdict
            raise ModeratorUnavailable(f"{self.spec.model}: {exc}") from exc
        flagged, categories = parse_guard_output("".join(parts), self.spec.categories)
        return ModerationVerdict(flagged, self.name, self.version, categories)


class OpenAIModerator:
    name = "openai"

    def __init__(self, spec: OpenAIModerationSpec, http: httpx.AsyncClient, timeout_s: float) -> None:
        self.spec = spec
        self.http = http
        self.timeout_s = timeout_s

    async def check(self, text: str, question: str | None) -> ModerationVerdict:
        key = os.environ.get(self.spec.api_key_env) if self.spec.api_key_env else None
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        try:
            resp = await self.http.post(
                f"{self.spec.url.rstrip('/')}/v1/moderations",
                json={"model": self.spec.model, "input": text},
                headers=headers,
                timeout=self.timeout_s,
            )
            resp.raise_for_status()
            body = resp.json()
            result = body["results"][0]
            flagged = bool(result["flagged"])
            categories = sorted(name for name, hit in (result.get("categories") or {}).items() if hit)
        except (httpx.HTTPError, ValueError, KeyError, IndexError, TypeError) as exc:
            raise ModeratorUnavailable(f"{self.spec.url}: {exc}") from exc
        return ModerationVerdict(flagged, self.name, str(body.get("model") or self.spec.model), categories)


def make_moderator(
    policy: ModerationPolicy, safety: SafetyEngine, registry: ModelRegistry, http: httpx.AsyncClient
) -> Moderator:
    timeout_s = policy.timeout.total_seconds()
    if policy.moderator == "llama_guard" and policy.llama_guard is not None:
        return LlamaGuardModerator(policy.llama_guard, registry, timeout_s)
    if policy.moderator == "openai" and policy.openai is not None:
        return OpenAIModerator(policy.openai, http, timeout_s)
    return RulesModerator(safety)
