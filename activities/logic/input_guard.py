"""What happens to a user's message before anything else sees it: size check, PII redaction, rules.

The API runs this before starting a turn, so raw PII never reaches Temporal history, the index or a
model; the workflow's validate step runs it again for turns started by other clients.
"""

from __future__ import annotations

from dataclasses import dataclass

from activities.logic.pii import PiiPolicy, redact
from activities.logic.safety import SafetyEngine, Verdict


class InputRejected(ValueError):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def unstorable(text: str) -> str | None:
    """Why Postgres (or any UTF-8 store) could not keep this text, or None when it can."""
    if "\x00" in text:
        return "contains a NUL (\\u0000) character"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "is not valid Unicode (it has a lone surrogate)"
    return None


@dataclass(frozen=True)
class GuardedInput:
    text: str
    pii_counts: dict[str, int]
    safety_version: str


def guard_input(text: str, engine: SafetyEngine, pii_policy: PiiPolicy | None = None) -> GuardedInput:
    """Raises InputRejected (code: empty_message, invalid_text, message_too_long,
    content_policy_violation)."""
    if not text.strip():
        raise InputRejected("empty_message", "the message is empty")
    if why := unstorable(text):
        raise InputRejected("invalid_text", f"the message {why}")
    limit = engine.rules.input.max_chars
    if len(text) > limit:
        raise InputRejected(
            "message_too_long", f"the message has {len(text)} characters; the limit is {limit}"
        )
    redaction = redact(text, pii_policy)
    verdict: Verdict = engine.check_input(redaction.text)
    if not verdict.allowed:
        raise InputRejected(
            "content_policy_violation", f"the message was refused by the {verdict.category} rules"
        )
    return GuardedInput(redaction.text, redaction.counts, engine.version)
