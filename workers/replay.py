"""Compliance replay of a past turn: its history from Temporal (decoded with the deployment's keys),
replayed against the current workflow code to prove the recorded decisions are reproduced, and
reconstructed: the input as redacted, the route, the retrieved chunks with versions, the exact prompt
sent, the model and version, the streamed output, moderation, timings."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select
from temporalio.api.common.v1 import Payload
from temporalio.api.failure.v1 import Failure
from temporalio.api.history.v1 import MarkerRecordedEventAttributes
from temporalio.client import WorkflowHistory
from temporalio.converter import PayloadCodec
from temporalio.service import RPCError, RPCStatusCode
from temporalio.worker import Replayer

from activities.logic.attachments import image_reference
from db.models import Message
from infra.runtime.resources import Resources
from infra.runtime.temporal_client import data_converter
from workers.chat import WORKFLOWS, sandbox_runner

# Local activities whose results the reconstruction keeps, under these names. The prepare step's result
# holds the validation, the retrieval, the route and the prompt, each kept under its own name.
_STEPS = {"persist_turn": "persisted"}
_PREPARED = "prepare_turn"


# The turn's input as the reconstruction shows it: always these, and the others when the request set them.
_INPUT = ("tenant_id", "conversation_id", "request_id", "user_text", "pii_counts", "model")
_ASKED = ("temperature", "max_tokens", "sampling", "tool_exchange", "sources_only")
# Steps that give a reply without a model: the response cache, or the retrieved passages.
_NO_MODEL = {"serve_cached": "response_cache", "answer_from_sources": "sources"}


@dataclass
class Verdict:
    reproduced: bool
    failure: str | None = None


@dataclass
class Reconstruction:
    turn_id: str
    facts: dict[str, Any] = field(default_factory=dict)
    inference: list[dict[str, Any]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "turn_id": self.turn_id,
            **self.facts,
            "inference": self.inference,
            "timings_ms": self.timings,
        }


async def _values(codec: PayloadCodec | None, payloads: Sequence[Payload]) -> list[Any]:
    decoded = await codec.decode(list(payloads)) if codec else list(payloads)
    return [json.loads(p.data) if p.data else None for p in decoded]


def _ms(since: datetime, moment: datetime) -> float:
    return round((moment - since).total_seconds() * 1000, 1)


async def _failure_message(codec: PayloadCodec | None, failure: Failure) -> str:
    """A failure's message; an encoded one (payload codec set: message and stack trace encrypted into
    ``encoded_attributes``) is opened with the codec."""
    if codec is None or not failure.HasField("encoded_attributes"):
        return failure.message
    [attributes] = await _values(codec, [failure.encoded_attributes])
    return (
        str(attributes.get("message", failure.message)) if isinstance(attributes, dict) else failure.message
    )


async def _local_attempt(
    facts: dict[str, Any], marker: MarkerRecordedEventAttributes, codec: PayloadCodec | None, at_ms: float
) -> dict[str, Any]:
    """A local activity's marker holds its result (or failure), not its input: the model and the
    prompt sent are the route's and the assembled prompt's, recorded by the steps before it."""
    attempt: dict[str, Any] = {
        "prompt_sent": (facts.get("prompt") or {}).get("messages"),
        "max_tokens": (facts.get("route") or {}).get("max_tokens"),
        "recorded_ms": at_ms,
    }
    if marker.HasField("failure"):
        attempt.update(outcome="failed", error=await _failure_message(codec, marker.failure))
        return attempt
    [result] = await _values(codec, marker.details["result"].payloads)
    chain = (facts.get("route") or {}).get("chain") or []
    target: dict[str, Any] = next((t for t in chain if t.get("name") == result.get("model")), {})
    attempt.update(
        model=result.get("model"),
        version=result.get("model_version"),
        endpoint=target.get("endpoint"),
        outcome="completed",
        result=result,
    )
    return attempt


async def reconstruct(history: WorkflowHistory, codec: PayloadCodec | None) -> Reconstruction:
    out = Reconstruction(history.workflow_id)
    started_at: datetime | None = None
    attempts: dict[int, dict[str, Any]] = {}  # infer attempts by their scheduled event id
    for event in history.events:
        kind = event.WhichOneof("attributes")
        at = event.event_time.ToDatetime()
        if kind == "workflow_execution_started_event_attributes":
            started_at = at
            [inp] = await _values(codec, event.workflow_execution_started_event_attributes.input.payloads)
            out.facts["input"] = {k: inp.get(k) for k in _INPUT}
            # What the request asked beyond its text (sampling, tools, a tool exchange, images by
            # reference), where it asked it.
            out.facts["input"] |= {k: inp[k] for k in _ASKED if inp.get(k) is not None}
            if images := inp.get("images"):
                out.facts["input"]["images"] = [image_reference(p["image_url"]["url"]) for p in images]
        elif kind == "marker_recorded_event_attributes":
            marker = event.marker_recorded_event_attributes
            if "data" not in marker.details:
                continue
            data = json.loads(marker.details["data"].payloads[0].data)
            step = data.get("activity_type", "")
            if step == "infer":  # a local inference: its attempt, from what the steps before it decided
                out.inference.append(
                    await _local_attempt(out.facts, marker, codec, _ms(started_at or at, at))
                )
            elif step in _NO_MODEL and "result" in marker.details:  # no model answered: whence the reply
                [result] = await _values(codec, marker.details["result"].payloads)
                out.facts["reply_from"] = {"source": _NO_MODEL[step], "result": result}
            elif step == _PREPARED and "result" in marker.details:
                [prepared] = await _values(codec, marker.details["result"].payloads)
                out.facts.update(prepared)
            elif (name := _STEPS.get(step)) and "result" in marker.details:
                [out.facts[name]] = await _values(codec, marker.details["result"].payloads)
        elif kind == "activity_task_scheduled_event_attributes":
            scheduled = event.activity_task_scheduled_event_attributes
            if scheduled.activity_type.name == "infer":
                [inp] = await _values(codec, scheduled.input.payloads)
                target = inp.get("target") or {}
                attempts[event.event_id] = {
                    "model": target.get("name", inp.get("model")),
                    "version": target.get("version"),
                    "endpoint": target.get("endpoint"),
                    "prompt_sent": inp.get("messages"),
                    "max_tokens": inp.get("max_tokens"),
                    "scheduled_ms": _ms(started_at or at, at),
                }
                out.inference.append(attempts[event.event_id])
        elif kind == "activity_task_completed_event_attributes":
            done = event.activity_task_completed_event_attributes
            if done.scheduled_event_id in attempts:
                [result] = await _values(codec, done.result.payloads)
                attempts[done.scheduled_event_id].update(outcome="completed", result=result)
        elif kind == "activity_task_failed_event_attributes":
            failed = event.activity_task_failed_event_attributes
            if failed.scheduled_event_id in attempts:
                error = await _failure_message(codec, failed.failure)
                attempts[failed.scheduled_event_id].update(outcome="failed", error=error)
        elif kind == "workflow_execution_completed_event_attributes":
            [out.facts["result"]] = await _values(
                codec, event.workflow_execution_completed_event_attributes.result.payloads
            )
            out.timings["total"] = _ms(started_at or at, at)
    return out


async def replay_verdict(history: WorkflowHistory, codec: PayloadCodec | None) -> Verdict:
    """Replay against the current code; a non-determinism comes back as a verdict, not a traceback."""
    replayer = Replayer(
        workflows=WORKFLOWS, data_converter=data_converter(codec), workflow_runner=sandbox_runner()
    )
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    if result.replay_failure is None:
        return Verdict(True)
    cause: BaseException = result.replay_failure
    while cause.__cause__ is not None and str(cause.__cause__):
        cause = cause.__cause__
    return Verdict(False, f"{type(result.replay_failure).__name__}: {str(cause).splitlines()[0][:500]}")


async def fetch_history(res: Resources, turn_id: str) -> WorkflowHistory:
    try:
        return await res.temporal.get_workflow_handle(turn_id).fetch_history()
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            raise LookupError(f"no turn {turn_id} in Temporal (past the namespace's retention?)") from exc
        raise


async def turn_audit(res: Resources, history: WorkflowHistory) -> dict[str, Any]:
    """The reconstruction, the replay verdict, and what moderation decided (from the transcript)."""
    rec = await reconstruct(history, res.codec)
    verdict = await replay_verdict(history, res.codec)
    async with res.sessions() as session:
        reply = await session.scalar(
            select(Message).where(Message.turn_id == history.workflow_id, Message.role == "assistant")
        )
    moderation = None
    if reply is not None:
        moderation = {"redacted": reply.redacted, "reason": reply.redaction_reason}
    return {
        **rec.as_dict(),
        "moderation": moderation,
        "replay": {"reproduced": verdict.reproduced, "failure": verdict.failure},
    }
