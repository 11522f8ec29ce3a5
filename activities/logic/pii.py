"""PII redaction: the patterns in one tested module (no offline library covers these without a model).

Each finding is replaced by a typed placeholder such as ``[EMAIL]``; card numbers must pass the Luhn
check and IBANs the mod-97 check, so ordinary long numbers are left alone. A tenant's policy may
instead mask a kind (``j***@example.com``, ``**** **** **** 4242``: enough to recognise, not to use) or
allow it (left as written, not counted).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

LABELS = ("EMAIL", "IBAN", "CARD", "SSN", "NATIONAL_ID", "IP", "PHONE")
Action = Literal["redact", "mask", "allow"]
ACTIONS: tuple[Action, ...] = ("redact", "mask", "allow")
PiiPolicy = Mapping[str, str]

_EMAIL = re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}\b")
_CARD = re.compile(r"\b(?:\d[ -]?){12,18}\d\b")
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?:[ ]?[A-Z0-9]{4}){2,7}(?:[ ]?[A-Z0-9]{1,4})?\b")
_IPV4 = re.compile(r"\b(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(?:25[0-5]|2[0-4]\d|1?\d?\d)\b")
_IPV6 = re.compile(r"\b(?:[0-9a-fA-F]{1,4}:){7}[0-9a-fA-F]{1,4}\b")
_SSN = re.compile(r"\b(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}\b")
# National ids beside the US SSN: the UK National Insurance number (two letters from its allowed set,
# six digits, a suffix A-D).
_NINO = re.compile(
    r"\b(?!BG|GB|NK|KN|TN|NT|ZZ)[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z] ?\d{2} ?\d{2} ?\d{2} ?[A-D]\b"
)
_PHONE = re.compile(
    # Not part of a longer run of digit groups (a card number that failed its check, say).
    r"(?<![\w+])(?<!\d[ .-])(?:\+\d{1,3}[ .-]?)?(?:\(\d{2,4}\)[ .-]?)?"
    r"\d{2,4}[ .-]\d{3,4}(?:[ .-]?\d{3,4})?\b(?![ .-]?\d)"
)


def luhn_ok(digits: str) -> bool:
    total, parity = 0, len(digits) % 2
    for i, ch in enumerate(digits):
        d = int(ch)
        if i % 2 == parity:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def iban_ok(raw: str) -> bool:
    iban = raw.replace(" ", "")
    if not 15 <= len(iban) <= 34:
        return False
    moved = iban[4:] + iban[:4]
    return int("".join(str(int(ch, 36)) for ch in moved)) % 97 == 1


@dataclass(frozen=True)
class Redaction:
    text: str
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def redacted(self) -> bool:
        return bool(self.counts)


def check_policy(policy: PiiPolicy) -> dict[str, str]:
    """A tenant's PII policy, validated: kinds among LABELS, actions among ACTIONS."""
    for label, action in policy.items():
        if label not in LABELS:
            raise ValueError(f"unknown PII kind {label!r}: one of {', '.join(LABELS)}")
        if action not in ACTIONS:
            raise ValueError(f"unknown PII action {action!r} for {label}: one of {', '.join(ACTIONS)}")
    return dict(policy)


def mask(found: str) -> str:
    """Keep an email's first letter and domain, or a number's last four; hide the rest."""
    if "@" in found:
        user, _, domain = found.partition("@")
        return f"{user[:1]}***@{domain}"
    keep = 4
    out, seen = [], 0
    for ch in reversed(found):
        if ch.isalnum():
            seen += 1
            out.append(ch if seen <= keep else "*")
        else:
            out.append(ch)
    return "".join(reversed(out))


def redact(text: str, policy: PiiPolicy | None = None) -> Redaction:
    """Replace PII with placeholders (or mask or allow it, per ``policy``); the order matters (cards
    before phones, IBANs before both)."""
    counts: Counter[str] = Counter()
    policy = policy or {}

    def sub(pattern: re.Pattern[str], label: str, text: str, valid: object = None) -> str:
        action = policy.get(label, "redact")

        def repl(m: re.Match[str]) -> str:
            if valid is not None and not valid(m.group(0)):  # type: ignore[operator]
                return m.group(0)
            if action == "allow":
                return m.group(0)
            counts[label] += 1
            return mask(m.group(0)) if action == "mask" else f"[{label}]"

        return pattern.sub(repl, text)

    text = sub(_EMAIL, "EMAIL", text)
    text = sub(_IBAN, "IBAN", text, iban_ok)
    text = sub(_CARD, "CARD", text, lambda s: luhn_ok(re.sub(r"\D", "", s)))
    text = sub(_SSN, "SSN", text)
    text = sub(_NINO, "NATIONAL_ID", text)
    text = sub(_IPV6, "IP", text)
    text = sub(_IPV4, "IP", text)
    text = sub(_PHONE, "PHONE", text, lambda s: 7 <= len(re.sub(r"\D", "", s)) <= 15)
    return Redaction(text, dict(counts))
