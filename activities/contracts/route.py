"""The route step's input and output: which models serve a turn, in order, and why."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated

from pydantic import BaseModel, Field, PlainSerializer

COST_QUANTUM = Decimal("1e-10")


# US dollars: exact, and written out in full in JSON ("0.0000009800", never "9.8E-7").
Usd = Annotated[Decimal, PlainSerializer(lambda d: f"{d:f}", return_type=str, when_used="json")]


class ModelTarget(BaseModel):
    """One model in a turn's chain, with the replica chosen for this conversation."""

    name: str
    version: str
    provider: str
    tier: str
    endpoint: str
    context: int
    canary: bool = False
    input_per_1k: Decimal = Decimal(0)
    output_per_1k: Decimal = Decimal(0)

    def cost(self, input_tokens: int, output_tokens: int) -> Decimal:
        """US dollars, exact (decimal): usage reports sum these per-message figures."""
        exact = (input_tokens * self.input_per_1k + output_tokens * self.output_per_1k) / 1000
        return exact.quantize(COST_QUANTUM)  # what the database column holds (10 decimal places)


class RouteRequest(BaseModel):
    tenant_id: str
    conversation_id: str
    turn_id: str | None = None
    requested_model: str | None = None
    latency_budget_ms: int | None = None
    interactive: bool = True
    max_tokens: int | None = None


class RouteDecision(BaseModel):
    chain: list[ModelTarget]
    rule: str
    reason: str
    skipped: list[dict[str, str]] = Field(default_factory=list)
    max_tokens: int
    # Tokens the prompt may take: the smallest context in the chain, less the reply's room.
    prompt_budget: int
    # The experiment arm this conversation is assigned to: the chosen base model, and the model
    # (that base or one of its canaries) its share gives the conversation (db/experiments.py).
    arm: dict[str, str] | None = None
    # The prompt template's arm: the base template and the one this conversation is assigned
    # (which the prompt is assembled with). Absent in turns recorded before templates had canaries.
    prompt_arm: dict[str, str] | None = None
    # Set when every model's circuit is open (why, as the client is told): the chain is the one
    # routing would choose, and the turn may be answered from its sources instead of refused.
    unavailable: str | None = None
