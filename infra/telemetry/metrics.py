"""Every metric turnflow records, in one place: GenAI client metrics (spec names and buckets) and the
platform's own. Prometheus sees them as ``gen_ai_*`` and ``turnflow_*`` (units become suffixes).

Labels are bounded: models, statuses, tenants (by name: one series per tenant, never per request),
never turn, conversation or request ids. Instruments made before the process sets its meter provider
(infra/telemetry/setup.py) record into it once set, and into nothing when telemetry is off.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Observation

from infra.telemetry import genai

_meter = metrics.get_meter("turnflow")

# Seconds, from a cache hit to a long generation.
LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)

token_usage = _meter.create_histogram(
    "gen_ai.client.token.usage",
    unit="{token}",
    description="Tokens per model call, by gen_ai.token.type (input, output)",
    explicit_bucket_boundaries_advisory=genai.TOKEN_USAGE_BUCKETS,
)
operation_duration = _meter.create_histogram(
    "gen_ai.client.operation.duration",
    unit="s",
    description="A model call from request to its last token",
    explicit_bucket_boundaries_advisory=genai.OPERATION_DURATION_BUCKETS,
)
time_to_first_token = _meter.create_histogram(
    "gen_ai.server.time_to_first_token",
    unit="s",
    description="From the request to the first token of the reply",
    explicit_bucket_boundaries_advisory=genai.TIME_TO_FIRST_TOKEN_BUCKETS,
)
time_per_output_token = _meter.create_histogram(
    "gen_ai.server.time_per_output_token",
    unit="s",
    description="Inter-token latency: decode time over the tokens after the first",
    explicit_bucket_boundaries_advisory=genai.TIME_PER_OUTPUT_TOKEN_BUCKETS,
)
output_tokens_per_second = _meter.create_histogram(
    "turnflow.inference.output_tokens_per_second",
    unit="{token}/s",
    description="Decode speed of one stream (aggregate throughput: rate of gen_ai token usage)",
    explicit_bucket_boundaries_advisory=(1, 2, 5, 10, 20, 30, 45, 60, 80, 100, 150, 200, 400),
)
model_errors = _meter.create_counter(
    "turnflow.model.errors", unit="{error}", description="Failed model calls, by model and error.type"
)
fallbacks = _meter.create_counter(
    "turnflow.model.fallbacks", unit="{fallback}", description="Turns served by a later model of their chain"
)
turn_duration = _meter.create_histogram(
    "turnflow.turn.duration",
    unit="s",
    description="A chat turn from its start to its persisted reply, by model and status",
    explicit_bucket_boundaries_advisory=LATENCY_BUCKETS_S,
)
turns = _meter.create_counter(
    "turnflow.turns", unit="{turn}", description="Finished turns, by tenant, model and status"
)
cost = _meter.create_counter(
    "turnflow.cost.usd",
    description="What replies cost (USD), by tenant and model; per 1k messages: 1000 x its rate / turns'",
)
retrieval_duration = _meter.create_histogram(
    "turnflow.retrieval.duration",
    unit="s",
    description="Hybrid search for a turn's context, by cache outcome",
    explicit_bucket_boundaries_advisory=LATENCY_BUCKETS_S,
)
retrieval_cache = _meter.create_counter(
    "turnflow.retrieval.cache.requests",
    unit="{request}",
    description="Retrieval cache lookups by cache (query_embedding, results) and result (hit, miss)",
)
response_cache = _meter.create_counter(
    "turnflow.response_cache.lookups",
    unit="{lookup}",
    description="Response cache lookups of repeatable turns, by result (hit, miss); hit rate: hits / all",
)
response_cache_ttft = _meter.create_histogram(
    "turnflow.response_cache.hit_ttft",
    unit="s",
    description="A cache hit's time from the turn's start to its first token event",
    explicit_bucket_boundaries_advisory=LATENCY_BUCKETS_S,
)
degraded_answers = _meter.create_counter(
    "turnflow.turns.degraded_answers",
    unit="{turn}",
    description="Turns answered from the retrieved passages, no model, by reason (models_failed, overloaded)",
)
moderation_exposure = _meter.create_histogram(
    "turnflow.moderation.exposure",
    unit="s",
    description="A redacted reply: from its first token sent to the `redact` event, by moderator",
    explicit_bucket_boundaries_advisory=LATENCY_BUCKETS_S,
)
moderation_exposure_tokens = _meter.create_histogram(
    "turnflow.moderation.exposure_tokens",
    unit="{token}",
    description="A redacted reply: how many of its tokens clients got before the `redact` event",
    explicit_bucket_boundaries_advisory=(1, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096),
)
turns_shed = _meter.create_counter(
    "turnflow.turns.shed", unit="{turn}", description="Interactive turns refused at capacity (503, retryable)"
)
feedback = _meter.create_counter(
    "turnflow.feedback",
    unit="{verdict}",
    description="Users' verdicts on replies, by model, version and score (1, -1, or withdrawn)",
)
rate_limited = _meter.create_counter(
    "turnflow.rate_limit.refusals", unit="{request}", description="Requests refused by a tenant's limit"
)

# Circuit breakers live in Redis; the API refreshes this view before each scrape (api/routes/metrics.py).
BREAKER_STATES = {"closed": 0, "half_open": 1, "open": 2}
breaker_view: dict[tuple[str, str], str] = {}


def _observe_breakers(_options: CallbackOptions) -> Iterable[Observation]:
    for (model, endpoint), state in breaker_view.items():
        yield Observation(BREAKER_STATES.get(state, 2), {"model": model, genai.SERVER_ADDRESS: endpoint})


_meter.create_observable_gauge(
    "turnflow.model.breaker.state",
    callbacks=[_observe_breakers],
    description="Circuit breaker per model endpoint: 0 closed, 1 half-open, 2 open",
)


# The API process's open SSE streams (api/core/drain.py counts them): what its autoscaler follows, as
# CPU lags for streams that mostly wait (the Helm chart's HPA, through prometheus-adapter).
open_streams: Callable[[], int] | None = None


def _observe_streams(_options: CallbackOptions) -> Iterable[Observation]:
    if open_streams is not None:
        yield Observation(open_streams())


_meter.create_observable_gauge(
    "turnflow.api.open_streams",
    callbacks=[_observe_streams],
    unit="{stream}",
    description="SSE streams this API process is serving now",
)
