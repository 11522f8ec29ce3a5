"""IngestDocumentWorkflow: parse → redact → chunk → embed (batches) → make live. One per document version.

Its id is ``ingest-{document}-v{version}``, so a retried upload joins the run already going.
"""

from __future__ import annotations

from temporalio import workflow
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.contracts.ingest import (
        DocumentRef,
        EmbedInput,
        FailInput,
        IngestInput,
        IngestResult,
        Prepared,
    )

from workflows.policy_options import StepFailed, run_with_policy

# Rounds of embed → activate when re-embeds keep switching the tenant's version underneath.
MAX_EMBED_ROUNDS = 3


def ingest_workflow_id(document_id: str, version: int) -> str:
    return f"ingest-{document_id}-v{version}"


@workflow.defn(name="ingest_document")
class IngestDocumentWorkflow:
    def __init__(self) -> None:
        self._stage = "queued"

    @workflow.query
    def stage(self) -> str:
        """Where the run is: queued, parsing, embedding, activating, ready or failed."""
        return self._stage

    @workflow.run
    async def run(self, inp: IngestInput) -> IngestResult:
        opts = inp.options
        ref = DocumentRef(tenant_id=inp.tenant_id, document_id=inp.document_id, version=inp.version)
        try:
            self._stage = "parsing"
            prepared = await run_with_policy(opts, "parse_and_chunk", inp, Prepared)
            model, version = prepared.embedding_model, prepared.embedding_version
            for _ in range(MAX_EMBED_ROUNDS):
                self._stage = "embedding"
                await run_with_policy(
                    opts,
                    "embed_chunks",
                    EmbedInput(
                        tenant_id=inp.tenant_id,
                        document_id=inp.document_id,
                        version=inp.version,
                        embedding_model=model,
                        embedding_version=version,
                        batch_size=inp.batch_size,
                    ),
                    int,
                )
                self._stage = "activating"
                result = await run_with_policy(opts, "activate_document", ref, IngestResult)
                if result.embed_again_with is None:
                    break
                # The tenant moved to another embedding version meanwhile: embed for that one.
                model, version = result.embed_again_with
            else:
                raise StepFailed("activate_document", ApplicationError("the embedding version kept changing"))
        except StepFailed as exc:
            self._stage = "failed"
            reason = exc.reason
            if isinstance(reason, ApplicationError) and reason.type == "DocumentRejected":
                code = str(reason.details[0]) if reason.details else "document_rejected"
                message = reason.message
            else:
                code, message = "ingestion_failed", f"{exc.activity_name} failed: {reason}"
            return await run_with_policy(
                opts,
                "mark_document_failed",
                FailInput(document=ref, code=code, message=message),
                IngestResult,
            )
        self._stage = result.status
        return result
