"""The safety rules engine: input checks, an incremental output monitor, and the moderation check."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field

DEFAULT_RULES = Path(__file__).resolve().parent / "safety.yaml"  # package data
# An output pattern may span tokens; re-check this many trailing characters per new token.
_OUTPUT_WINDOW = 400


class _Rules(BaseModel):
    model_config = ConfigDict(extra="forbid")


class InputRules(_Rules):
    max_chars: int = Field(default=8000, gt=0)
    blocklist: list[str] = Field(default_factory=list)
    prompt_injection: list[str] = Field(default_factory=list)


class OutputRules(_Rules):
    stop: list[str] = Field(default_factory=list)


class ModerationRules(_Rules):
    flag: list[str] = Field(default_factory=list)


class SafetyRules(_Rules):
    version: str
    input: InputRules = InputRules()
    output: OutputRules = OutputRules()
    moderation: ModerationRules = ModerationRules()


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    rule: str | None = None
    category: str | None = None


def _compile(patterns: list[str]) -> list[re.Pattern[str]]:
    return [re.compile(p, re.IGNORECASE) for p in patterns]


class SafetyEngine:
    def __init__(self, rules: SafetyRules) -> None:
        self.rules = rules
        self.version = rules.version
        self._blocklist = _compile(rules.input.blocklist)
        self._injection = _compile(rules.input.prompt_injection)
        self._stop = _compile(rules.output.stop)
        self._flag = _compile(rules.moderation.flag)

    @classmethod
    def load(cls, path: Path = DEFAULT_RULES) -> SafetyEngine:
        return cls(SafetyRules.model_validate(yaml.safe_load(path.read_text())))

    def check_input(self, text: str) -> Verdict:
        for category, patterns in (("blocklist", self._blocklist), ("prompt_injection", self._injection)):
            for pattern in patterns:
                if pattern.search(text):
                    return Verdict(False, pattern.pattern, category)
        return Verdict(True)

    def moderate(self, text: str) -> Verdict:
        for pattern in self._flag:
            if pattern.search(text):
                return Verdict(False, pattern.pattern, "moderation")
        return Verdict(True)

    def output_monitor(self) -> OutputMonitor:
        return OutputMonitor(self._stop)


class OutputMonitor:
    """Fed the text as it streams; says when a stop rule matches, checking only the recent tail."""

    def __init__(self, patterns: list[re.Pattern[str]]) -> None:
        self._patterns = patterns
        self._text = ""

    def feed(self, delta: str) -> Verdict:
        self._text += delta
        tail = self._text[-_OUTPUT_WINDOW:]
        for pattern in self._patterns:
            if pattern.search(tail):
                return Verdict(False, pattern.pattern, "output")
        return Verdict(True)
