"""Erasure on request: a conversation, an end user's conversations, or a tenant's, gone from every store
that holds them: Temporal (the turns' workflow executions), Redis (event streams, context caches), the
trace store, and Postgres last. Each batch is idempotent and Postgres goes last, so a retried or
resumed batch finds what is left (the turns are read from the messages it has not deleted yet)."""

from __future__ import annotations

import asyncio
import uuid

from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity
from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.workflowservice.v1 import DeleteWorkflowExecutionRequest
from temporalio.client import Client
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from activities.adapters.context_cache import recent_key
from activities.adapters.response_cache import ResponseCache
from activities.adapters.turn_events import stream_key
from activities.contracts.maintenance import ErasureBatch, ErasureCounts, ErasureInput, ErasureRecord
from db.engine import scope_to_tenant
from db.messages import conversations_to_erase, delete_conversations, turns_of
from db.models import AuditEvent
from db.tenant_keys import shred_tenant
from db.traces import delete_spans_of_turns

# A turn's own workflow and the children it may have started ("/moderation": turns of builds before
# moderation was a step of the turn, still in Temporal until their retention ends).
_CHILDREN = ("", "/webhook", "/moderation")
# How long a batch waits for Temporal to finish deleting before it fails (and is retried).
GONE_WITHIN_S = 60


class ErasureActivities:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        redis: Redis,
        temporal: Client,
        cache: ResponseCache | None = None,
    ) -> None:
        self.cache = cache
        self.sessions = sessions
        self.redis = redis
        self.temporal = temporal

    @activity.defn(name="erasure_plan")
    async def erasure_plan(self, inp: ErasureInput) -> list[str]:
        """The conversations the request covers (none left: the erasure has nothing more to do)."""
        tenant = uuid.UUID(inp.tenant_id)
        named = [uuid.UUID(c) for c in inp.conversation_ids] if inp.conversation_ids is not None else None
        async with self.sessions() as session:
            await scope_to_tenant(session, tenant)
            found = await conversations_to_erase(session, tenant, named, inp.end_user)
        return [str(c) for c in found]

    @activity.defn(name="erase_conversations")
    async def erase_conversations(self, batch: ErasureBatch) -> ErasureCounts:
        tenant = uuid.UUID(batch.tenant_id)
        conversations = [uuid.UUID(c) for c in batch.conversation_ids]
        async with self.sessions() as session:
            await scope_to_tenant(session, tenant)
            turns = await turns_of(session, conversations)
        counts = ErasureCounts(turns=len(turns))
        deleted = [
            w for t in turns for w in (t + suffix for suffix in _CHILDREN) if await self._delete_execution(w)
        ]
        counts.workflow_executions = len(deleted)
        await self._until_gone(deleted)
        keys = [stream_key(t) for t in turns] + [recent_key(str(c)) for c in conversations]
        if keys:
            counts.redis_keys = int(await self.redis.delete(*keys))
        if self.cache is not None:  # replies its turns left in the response cache
            for c in conversations:
                counts.redis_keys += await self.cache.forget_conversation(batch.tenant_id, str(c))
        async with self.sessions.begin() as session:
            await scope_to_tenant(session, tenant)
            counts.trace_spans = await delete_spans_of_turns(session, turns) if turns else 0
            counts.messages, counts.conversations = await delete_conversations(session, conversations)
        return counts

    @activity.defn(name="shred_tenant_key")
    async def shred_tenant_key(self, request: ErasureInput) -> int:
        """A whole tenant erased: its data keys go too, so every copy left (old histories past their
        deletion, backups) stays ciphertext for good."""
        return await shred_tenant(self.sessions, uuid.UUID(request.tenant_id), request.requested_by)

    @activity.defn(name="record_erasure")
    async def record_erasure(self, record: ErasureRecord) -> None:
        """The audit trail keeps that it happened, who asked and how much went; never what it was."""
        request = record.request
        scope = (
            {"conversations": request.conversation_ids}
            if request.conversation_ids is not None
            else {"end_user": request.end_user}
            if request.end_user is not None
            else {"tenant": "all"}
        )
        async with self.sessions.begin() as session:
            session.add(
                AuditEvent(
                    tenant_id=uuid.UUID(request.tenant_id),
                    actor=request.requested_by,
                    action="erasure.completed",
                    object_type="tenant",
                    object_id=request.tenant_id,
                    details={"scope": scope, **record.counts.model_dump()},
                )
            )

    async def _delete_execution(self, workflow_id: str) -> bool:
        """True when Temporal took the deletion (a running one is terminated first), False when it had
        no such execution."""
        request = DeleteWorkflowExecutionRequest(
            namespace=self.temporal.namespace, workflow_execution=WorkflowExecution(workflow_id=workflow_id)
        )
        try:
            await self.temporal.workflow_service.delete_workflow_execution(request)
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                return False
            raise
        return True

    async def _until_gone(self, workflow_ids: list[str]) -> None:
        """Temporal deletes asynchronously: the batch is done only once none of them is left. Past
        the bound it fails (retryable), and the retry finds what is still there (Postgres goes last)."""
        waiting = list(workflow_ids)
        for _ in range(GONE_WITHIN_S * 5):
            waiting = [w for w in waiting if not await self._gone(w)]
            if not waiting:
                return
            activity.heartbeat(f"{len(waiting)} executions still being deleted")
            await asyncio.sleep(0.2)
        raise ApplicationError(
            f"Temporal has not deleted {len(waiting)} executions yet (e.g. {waiting[0]})",
            type="StillDeleting",
        )

    async def _gone(self, workflow_id: str) -> bool:
        try:
            await self.temporal.get_workflow_handle(workflow_id).describe()
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                return True
            raise
        return False
