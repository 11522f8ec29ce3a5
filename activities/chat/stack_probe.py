"""The stack probe's activities: one real write or call per dependency."""

from __future__ import annotations

import time

from huggingface_hub import AsyncInferenceClient
from redis.asyncio import Redis
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity

from activities.contracts.probe import ModelProbeResult, ProbeRequest
from db.models import AuditEvent

PROBE_KEY_TTL_S = 3600


class StackProbeActivities:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        redis: Redis,
        model: AsyncInferenceClient,
    ) -> None:
        self.sessions = sessions
        self.redis = redis
        self.model = model

    @activity.defn(name="probe_postgres")
    async def probe_postgres(self, req: ProbeRequest) -> int:
        """Record the probe as an audit event; a retried attempt finds its earlier row."""
        async with self.sessions.begin() as session:
            existing = await session.scalar(
                select(AuditEvent.id).where(
                    AuditEvent.action == "stack.probe", AuditEvent.object_id == req.probe_id
                )
            )
            if existing is not None:
                return existing
            event = AuditEvent(
                actor="turnflow-worker",
                action="stack.probe",
                object_type="workflow",
                object_id=req.probe_id,
                details={"attempt": activity.info().attempt},
            )
            session.add(event)
            await session.flush()
            return event.id

    @activity.defn(name="probe_redis")
    async def probe_redis(self, req: ProbeRequest) -> str:
        key = f"turnflow:probe:{req.probe_id}"
        await self.redis.set(key, str(time.time()), ex=PROBE_KEY_TTL_S)
        return key

    @activity.defn(name="probe_model")
    async def probe_model(self, req: ProbeRequest) -> ModelProbeResult:
        """Stream a short completion, heartbeating per chunk, and time the first token."""
        start = time.perf_counter()
        ttft_ms: float | None = None
        parts: list[str] = []
        model_name: str | None = None
        stream = await self.model.chat_completion(
            messages=[{"role": "user", "content": req.prompt}],
            max_tokens=8,
            temperature=0.0,
            stream=True,
        )
        async for chunk in stream:
            activity.heartbeat(len(parts))
            model_name = model_name or chunk.model
            if chunk.choices and chunk.choices[0].delta.content:
                if ttft_ms is None:
                    ttft_ms = (time.perf_counter() - start) * 1000
                parts.append(chunk.choices[0].delta.content)
        return ModelProbeResult(
            text="".join(parts), chunks=len(parts), ttft_ms=ttft_ms or 0.0, model=model_name
        )
