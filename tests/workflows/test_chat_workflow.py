"""ChatTurnWorkflow's own decisions, on the time-skipping server with stand-in activities registered
under the real names (and the real prepare step over stand-in parts): a failed retrieval degrades the
turn; a refused input or route ends it with an error."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from decimal import Decimal

from temporalio import activity
from temporalio.client import WorkflowFailureError
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.chat.prepare_turn import TurnPreparation
from activities.contracts.route import ModelTarget, RouteDecision, RouteRequest
from activities.contracts.turn import (
    AssembleInput,
    AssembleResult,
    ChatTurnInput,
    ChatTurnResult,
    InferInput,
    InferResult,
    ModerationInput,
    PersistInput,
    PersistResult,
    RetrieveInput,
    RetrieveResult,
    TurnRef,
    ValidateInput,
    ValidateResult,
    WebhookInput,
)
from activities.logic.routing import TenantPolicy
from infra.config.policy import load_policy
from infra.config.prompts import DEFAULT_PROMPTS
from infra.config.settings import REPO_ROOT
from workers.chat import WORKFLOWS, sandbox_runner


def target(name: str, input_per_1k: str = "0", output_per_1k: str = "0") -> ModelTarget:
    return ModelTarget(
        name=name,
        version=f"{name}-v1",
        provider="llamacpp",
        tier="gpu",
        endpoint=f"http://{name}:80",
        context=2048,
        input_per_1k=Decimal(input_per_1k),
        output_per_1k=Decimal(output_per_1k),
    )


class StandIns:
    def __init__(
        self,
        *,
        retrieval_fails: bool = False,
        retrieval_hangs: bool = False,
        reject: str | None = None,
        chain: list[ModelTarget] | None = None,
        failing_models: frozenset[str] = frozenset(),
        refuse_route: str | None = None,
        webhook_refuses: bool = False,
    ) -> None:
        self.webhook_refuses = webhook_refuses
        self.webhooks: list[WebhookInput] = []
        self.retrieval_fails = retrieval_fails
        self.retrieval_hangs = retrieval_hangs
        self.retrievals = 0
        self.reject = reject
        self.chain = chain or [target("m")]
        self.failing_models = failing_models
        self.refuse_route = refuse_route
        self.infer_inputs: list[InferInput] = []
        self.persisted: list[PersistInput] = []

    # The prepare step's parts (TurnPreparation runs them as it runs the real ones).
    async def tenant_policy(self, tenant_id: str) -> TenantPolicy:
        return TenantPolicy()

    async def route_turn(self, inp: RouteRequest) -> RouteDecision:
        if self.refuse_route:
            raise ApplicationError("no", self.refuse_route, False, type="RouteRefused", non_retryable=True)
        return RouteDecision(
            chain=self.chain, rule="highest_fidelity", reason="r", max_tokens=64, prompt_budget=1984
        )

    async def validate_turn(self, inp: ValidateInput) -> ValidateResult:
        if self.reject:
            raise ApplicationError("refused", self.reject, type="InputRejected", non_retryable=True)
        return ValidateResult(text=inp.text, pii_counts={}, safety_version="v")

    async def retrieve(self, inp: RetrieveInput) -> RetrieveResult:
        self.retrievals += 1
        if self.retrieval_fails:
            raise RuntimeError("pgvector is unreachable")
        if self.retrieval_hangs:
            await asyncio.sleep(30)
        return RetrieveResult(chunks=[], embedding_model="m")

    async def assemble_prompt(self, inp: AssembleInput) -> AssembleResult:
        return AssembleResult(
            messages=[{"role": "user", "content": inp.user_text}],
            prompt_tokens=5,
            history_used=0,
            chunks_used=[],
            compressed=False,
            template_version=next(iter(DEFAULT_PROMPTS)),
        )

    @activity.defn(name="infer")
    async def infer(self, inp: InferInput) -> InferResult:
        self.infer_inputs.append(inp)
        if inp.model in self.failing_models:
            raise ApplicationError(f"{inp.model}: circuit opened", type="CircuitOpen", non_retryable=True)
        return InferResult(
            text="hello",
            model=inp.model,
            model_version=inp.target.version if inp.target else None,
            output_tokens=7,
            ttft_ms=1.0,
            finish_reason="stop",
        )

    @activity.defn(name="persist_turn")
    async def persist(self, inp: PersistInput) -> PersistResult:
        self.persisted.append(inp)
        return PersistResult(user_message_id=str(uuid.uuid4()), assistant_message_id=str(uuid.uuid4()))

    @activity.defn(name="notify_webhook")
    async def notify(self, inp: WebhookInput) -> None:
        self.webhooks.append(inp)
        if self.webhook_refuses:
            raise ApplicationError("410 Gone", type="WebhookRejected", non_retryable=True)

    @activity.defn(name="partial_text")
    async def partial(self, inp: TurnRef) -> str:
        return ""

    @activity.defn(name="moderate_message")
    async def moderate(self, inp: ModerationInput) -> bool:
        return False

    def all(self) -> list[object]:
        return [
            TurnPreparation(self, self, self).prepare_turn,  # type: ignore[arg-type]
            self.notify,
            self.infer,
            self.persist,
            self.partial,
            self.moderate,
        ]


async def run_turn(
    env: WorkflowEnvironment, stand_ins: StandIns, webhook_url: str | None = None
) -> ChatTurnResult:
    queue = f"wf-{uuid.uuid4()}"
    turn_id = f"turn-{uuid.uuid4()}"
    async with Worker(
        env.client,
        task_queue=queue,
        workflows=WORKFLOWS,
        activities=stand_ins.all(),
        workflow_runner=sandbox_runner(),
    ):
        result = await env.client.execute_workflow(
            "chat_turn",
            ChatTurnInput(
                options=load_policy(REPO_ROOT / "temporal.yaml").options_for("chat_turn"),
                turn_id=turn_id,
                tenant_id=str(uuid.uuid4()),
                conversation_id=str(uuid.uuid4()),
                request_id="r",
                user_text="hi",
                model="m",
                webhook_url=webhook_url,
            ),
            id=turn_id,
            task_queue=queue,
            result_type=ChatTurnResult,
        )
        if webhook_url:
            # The delivery is a child the turn does not wait for: let it finish before the worker stops.
            with contextlib.suppress(WorkflowFailureError):
                await env.client.get_workflow_handle(f"{turn_id}/webhook").result()
        return result


async def test_failed_retrieval_degrades_the_turn(time_skipping: WorkflowEnvironment) -> None:
    stand_ins = StandIns(retrieval_fails=True)
    result = await run_turn(time_skipping, stand_ins)
    assert result.status == "completed" and result.degraded is True
    assert stand_ins.infer_inputs[0].degraded is True  # so the `turn` event says so
    assert stand_ins.persisted[0].degraded is True


async def test_failed_retrieval_is_tried_as_its_policy_says(time_skipping: WorkflowEnvironment) -> None:
    stand_ins = StandIns(retrieval_fails=True)
    await run_turn(time_skipping, stand_ins)
    policy = load_policy(REPO_ROOT / "temporal.yaml").activities["retrieve"]
    assert stand_ins.retrievals == policy.retry.maximum_attempts == 2


async def test_retrieval_past_its_deadline_degrades_the_turn_at_the_deadline(
    time_skipping: WorkflowEnvironment,
) -> None:
    stand_ins = StandIns(retrieval_hangs=True)
    started = time.monotonic()
    result = await run_turn(time_skipping, stand_ins)
    took = time.monotonic() - started
    assert result.status == "completed" and result.degraded is True
    # temporal.yaml: retrieval gets 1 s per attempt and 1.5 s in all; the turn does not wait longer.
    assert 1.4 < took < 5, took
    assert stand_ins.retrievals == 2  # the first attempt timed out at 1 s, the second at the 1.5 s deadline


async def test_refused_input_ends_with_an_error_and_records_it(time_skipping: WorkflowEnvironment) -> None:
    stand_ins = StandIns(reject="content_policy_violation")
    result = await run_turn(time_skipping, stand_ins)
    assert result.status == "error"
    assert result.error == {"code": "content_policy_violation", "message": "refused", "retryable": False}
    assert stand_ins.infer_inputs == []
    [persisted] = stand_ins.persisted
    assert persisted.status == "error" and persisted.error == result.error


async def test_the_turn_walks_the_routed_chain_and_records_route_fallback_and_cost(
    time_skipping: WorkflowEnvironment,
) -> None:
    chain = [target("gpu", "0.003", "0.012"), target("cpu", "0.0001", "0.0004")]
    stand_ins = StandIns(chain=chain, failing_models=frozenset({"gpu"}))
    result = await run_turn(time_skipping, stand_ins)
    assert [i.model for i in stand_ins.infer_inputs] == ["gpu", "cpu"]
    assert [i.first_choice for i in stand_ins.infer_inputs] == [True, False]
    assert all(i.max_tokens == 64 for i in stand_ins.infer_inputs)  # capped by the route
    assert (
        result.model == "cpu" and result.model_version == "cpu-v1" and result.route_rule == "highest_fidelity"
    )
    # 5 prompt tokens and 7 output tokens at the serving model's prices, exactly.
    assert result.cost_usd == (5 * Decimal("0.0001") + 7 * Decimal("0.0004")) / 1000
    [persisted] = stand_ins.persisted
    assert persisted.cost_usd == result.cost_usd and persisted.model_version == "cpu-v1"
    assert persisted.route is not None
    assert persisted.route["fallbacks"] == [{"model": "gpu", "error": "CircuitOpen"}]
    assert persisted.route["chain"] == ["gpu@gpu-v1", "cpu@cpu-v1"] and persisted.route["served_by"] == "cpu"


async def test_a_refused_route_ends_the_turn_with_its_code(time_skipping: WorkflowEnvironment) -> None:
    stand_ins = StandIns(refuse_route="token_budget_exceeded")
    result = await run_turn(time_skipping, stand_ins)
    assert result.status == "error" and stand_ins.infer_inputs == []
    assert result.error == {"code": "token_budget_exceeded", "message": "no", "retryable": False}
    assert stand_ins.persisted[0].error == result.error


async def test_a_refused_webhook_does_not_undo_the_turn(time_skipping: WorkflowEnvironment) -> None:
    stand_ins = StandIns(webhook_refuses=True)
    result = await run_turn(time_skipping, stand_ins, webhook_url="https://example.com/hook")
    assert result.status == "completed" and result.text == "hello"
    assert [w.result.turn_id for w in stand_ins.webhooks] == [result.turn_id]
