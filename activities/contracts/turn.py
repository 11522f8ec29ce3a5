"""The chat turn's data: the workflow's input and result, and each step's input and output.

Pydantic models, so fields can be added later without breaking histories already recorded.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from activities.contracts.route import ModelTarget, RouteDecision, RouteRequest, Usd
from activities.contracts.sampling import Sampling, ToolCall
from infra.config.policy import ActivityPolicy, WorkflowOptions

# A chat message as the model server takes it: role and content, and for tool exchanges an
# assistant's `tool_calls` or a tool result's `tool_call_id`.
Message = dict[str, Any]
TurnStatus = Literal["completed", "cancelled", "error"]


class ChatTurnInput(BaseModel):
    options: WorkflowOptions
    turn_id: str
    tenant_id: str
    conversation_id: str
    request_id: str
    # Already redacted by the API (raw PII never reaches history).
    user_text: str
    pii_counts: dict[str, int] = Field(default_factory=dict)
    # The tenant's PII policy (kind → redact | mask | allow); the validate step applies the same.
    pii_policy: dict[str, str] = Field(default_factory=dict)
    # Given by OpenAI-style requests that carry their own history; else it is loaded.
    history: list[Message] | None = None
    # The user message's images (OpenAI `image_url` parts; models that declare vision only).
    images: list[Message] | None = None
    # After the user's message: the model's tool calls and the client's results (OpenAI-style
    # requests answering a reply that called tools; results redacted like the message).
    tool_exchange: list[Message] | None = None
    # The model the request names, if any (routing decides; turns recorded before routing carry the
    # model they ran on, and their context and reply budgets).
    model: str | None = None
    context_tokens: int = 2048
    max_tokens: int | None = None
    temperature: float | None = None
    # Stop sequences, top_p, seed, penalties, constrained output (OpenAI-style requests).
    sampling: Sampling | None = None
    retrieval_k: int = 4
    latency_budget_ms: int | None = None
    # Non-interactive turns (batch, async jobs) run on their own task queue and workers.
    interactive: bool = True
    # Shed at capacity: answered from the retrieved passages only, no model (or an `overloaded` error).
    sources_only: bool = False
    webhook_url: str | None = None


class ValidateInput(BaseModel):
    tenant_id: str
    conversation_id: str
    text: str
    pii_policy: dict[str, str] = Field(default_factory=dict)


class ValidateResult(BaseModel):
    text: str
    pii_counts: dict[str, int]
    safety_version: str


class AssembleInput(BaseModel):
    # Whose key opens the history.
    tenant_id: str
    conversation_id: str
    # Whose tokenizer counts the prompt: the routed model's.
    model: str
    user_text: str
    chunks: list[ContextChunk]
    budget: int
    history: list[Message] | None = None
    images: list[Message] | None = None
    tool_exchange: list[Message] | None = None
    # The prompt template version routing assigned (temporal.yaml `prompts:`); None: the base.
    template: str | None = None


class AssembleResult(BaseModel):
    messages: list[Message]
    prompt_tokens: int
    history_used: int
    chunks_used: list[str]
    compressed: bool
    template_version: str
    # Counted with the stated estimate (no tokenizer for this model): recorded with the reply.
    tokens_estimated: bool = False


class InferInput(BaseModel):
    turn_id: str
    conversation_id: str
    request_id: str
    model: str
    messages: list[Message]
    max_tokens: int
    temperature: float | None
    sampling: Sampling | None = None
    degraded: bool = False
    # Where routing sent this attempt (absent in turns recorded before routing).
    target: ModelTarget | None = None
    route_rule: str | None = None
    first_choice: bool = True
    # The prompt as our tokenizer counted it (for telemetry when the server reports no usage).
    prompt_tokens: int | None = None
    # When the turn must stop generating to end within its whole-turn timeout (UTC). A local inference
    # watches it itself: the workflow's own timer reaches a running workflow task only at its next
    # heartbeat, seconds later. Past it the reply so far comes back, `out_of_time`.
    deadline: datetime | None = None


class InferResult(BaseModel):
    text: str
    model: str
    model_version: str | None = None
    # The server's own count of the prompt, when it reports one.
    input_tokens: int | None = None
    output_tokens: int
    ttft_ms: float | None
    finish_reason: str
    safety_rule: str | None = None
    # The tools the model called (finish reason `tool_calls`), arguments as it wrote them.
    tool_calls: list[ToolCall] = Field(default_factory=list)


class PersistInput(BaseModel):
    turn_id: str
    tenant_id: str
    conversation_id: str
    request_id: str
    user_text: str
    pii_redacted: bool
    assistant_text: str
    status: TurnStatus
    model_id: str | None = None
    model_version: str | None = None
    prompt_template_version: str | None = None
    retrieved_chunks: list[dict[str, object]] = Field(default_factory=list)
    input_tokens: int | None = None
    output_tokens: int | None = None
    ttft_ms: float | None = None
    latency_ms: float | None = None
    finish_reason: str | None = None
    error: dict[str, object] | None = None
    degraded: bool = False
    # Whether an out-of-band moderation verdict will follow on the stream.
    moderation_pending: bool = False
    route: dict[str, object] | None = None
    cost_usd: Usd | None = None
    interactive: bool = True
    tool_calls: list[ToolCall] = Field(default_factory=list)
    # `extractive`: answered from the sources, no model (SourcesInput).
    degraded_mode: str | None = None
    # The response cache's reply this turn served (its turn, message, carried moderation verdict).
    cached_from: CachedReply | None = None
    # The user message's images, recorded by reference (activities/chat/transcript.py).
    images: list[Message] | None = None
    # The request's tool exchange (the calls it answers and their results), recorded as a `tool` message.
    tool_exchange: list[Message] | None = None


class PersistResult(BaseModel):
    user_message_id: str
    assistant_message_id: str


class TurnRef(BaseModel):
    turn_id: str


class CachedReply(BaseModel):
    """A whole reply in the response cache (activities/adapters/response_cache.py): what a hit
    streams and records, and where it came from."""

    text: str
    model: str
    model_version: str | None = None
    finish_reason: str
    turn_id: str
    message_id: str
    conversation_id: str
    # The out-of-band verdict it had (only replies moderation found clean are kept): carried over,
    # with who gave it (the moderator and its version, set when it is put in).
    moderation: str = "clean"
    moderator: str | None = None


class CacheLookup(BaseModel):
    """The turn's place in the response cache: its key, and the reply found there, if any."""

    key: str
    hit: CachedReply | None = None


class CachePut(BaseModel):
    tenant_id: str
    key: str
    reply: CachedReply


class ModerationInput(BaseModel):
    options: WorkflowOptions
    turn_id: str
    message_id: str
    text: str
    # Kept in the response cache once moderation finds it clean (a turn whose answer repeats).
    cache: CachePut | None = None
    # The question the reply answers (a classifier judges the reply in its conversation).
    question: str | None = None
    # The moderator gave no verdict within the step's retries: apply the tenant's fail-open or
    # fail-closed choice, without asking it again.
    unavailable: bool = False


class ServeCachedInput(BaseModel):
    turn_id: str
    conversation_id: str
    request_id: str
    target: ModelTarget
    route_rule: str | None = None
    cached: CachedReply
    # When the turn started (its hit's time to first token is measured from it).
    started: datetime


class SourcesInput(BaseModel):
    """An answer from the retrieved passages, when no model can give one."""

    turn_id: str
    tenant_id: str
    conversation_id: str
    request_id: str
    question: str
    chunks: list[ContextChunk]
    # Tokens the answer may take (the turn's reply budget), counted with the stated estimate.
    budget: int
    # Why: every model failed (`models_failed`), or admission shed the turn (`overloaded`).
    reason: str


class ChatTurnResult(BaseModel):
    turn_id: str
    conversation_id: str
    status: TurnStatus
    text: str = ""
    message_id: str | None = None
    model: str | None = None
    model_version: str | None = None
    route_rule: str | None = None
    finish_reason: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    cost_usd: Usd | None = None
    ttft_ms: float | None = None
    degraded: bool = False
    error: dict[str, object] | None = None
    tool_calls: list[ToolCall] = Field(default_factory=list)
    # `extractive` when the reply came from the sources; whether it came from the response cache.
    degraded_mode: str | None = None
    cached: bool = False


class WebhookInput(BaseModel):
    url: str
    result: ChatTurnResult
    # Whose webhook (its allowed hosts apply); absent in deliveries recorded before it was sent.
    tenant_id: str | None = None


class WebhookDelivery(BaseModel):
    options: WorkflowOptions
    webhook: WebhookInput


class ContextChunk(BaseModel):
    id: str
    document_id: str
    document_version: int
    embedding_version: str | None = None
    text: str
    score: float


class RetrieveInput(BaseModel):
    tenant_id: str
    query: str
    k: int = 4


class RetrieveResult(BaseModel):
    chunks: list[ContextChunk]
    embedding_model: str | None = None
    embedding_version: str | None = None


class PrepareInput(BaseModel):
    """The turn's first step, one local activity: validation, retrieval and routing side by side, then
    the prompt. ``retrieval`` is temporal.yaml's `retrieve` policy (deadline, retries), applied inside."""

    check: ValidateInput
    retrieve: RetrieveInput
    route: RouteRequest
    retrieval: ActivityPolicy
    # Given by OpenAI-style requests that carry their own history; else the prompt loads it.
    history: list[Message] | None = None
    images: list[Message] | None = None
    tool_exchange: list[Message] | None = None
    # What, with the prompt, decides the reply: part of the response cache's key.
    temperature: float | None = None
    sampling: Sampling | None = None


class PrepareResult(BaseModel):
    validation: ValidateResult
    route: RouteDecision
    # None: retrieval failed or ran past its deadline, and the turn goes on without context (degraded).
    retrieval: RetrieveResult | None
    prompt: AssembleResult
    # Set when the reply may come from (and go to) the response cache.
    cache: CacheLookup | None = None
    # The tenant allows answers from the sources when no model can answer (its policy).
    degraded_answers: bool = False

    @property
    def degraded(self) -> bool:
        return self.retrieval is None

    @property
    def chunks(self) -> list[ContextChunk]:
        return self.retrieval.chunks if self.retrieval else []

    @property
    def user_text(self) -> str:
        return self.validation.text
