"""The ingest task queue's worker: document ingestion (and the retrieval maintenance workflows)."""

from __future__ import annotations

from temporalio.worker import Worker

from activities.ingest.erasure import ErasureActivities
from activities.ingest.ingestion import IngestionActivities
from activities.ingest.purge import PurgeActivities
from activities.ingest.reembed import ReembedActivities
from activities.ingest.retention import RetentionActivities
from activities.ingest.rollout import RolloutActivities
from infra.runtime.deployments import deployment_config
from infra.runtime.resources import Resources
from workers.chat import sandbox_runner
from workflows.canary_rollout import CanaryRolloutWorkflow
from workflows.erasure import ErasureWorkflow
from workflows.ingest_document import IngestDocumentWorkflow
from workflows.purge import PurgeTombstonesWorkflow
from workflows.reembed import ReembedWorkflow
from workflows.retention import RetentionWorkflow

INGEST_WORKFLOWS = [
    IngestDocumentWorkflow,
    ReembedWorkflow,
    PurgeTombstonesWorkflow,
    RetentionWorkflow,
    ErasureWorkflow,
    CanaryRolloutWorkflow,
]


def build_ingest_worker(res: Resources, *, task_queue: str | None = None) -> Worker:
    ingestion = IngestionActivities(
        res.sessions, res.embedders, res.redis, res.sealer, res.embedder.tokenizer_file
    )
    embedder = res.policy.stores.get("embedder")
    erasure = ErasureActivities(res.sessions, res.redis, res.temporal, res.response_cache)
    reembed = ReembedActivities(
        res.sessions, res.embedders, res.redis, res.sealer, embedder.residency if embedder else ()
    )
    rollout = RolloutActivities(res.sessions, res.redis, res.policy)
    return Worker(
        res.temporal,
        task_queue=task_queue or res.policy.queue("ingest"),
        # Auto-upgrade: its workflows may outlive a build (infra/runtime/deployments.py).
        deployment_config=deployment_config(res.settings, "ingest"),
        workflows=INGEST_WORKFLOWS,
        activities=[
            ingestion.parse_and_chunk,
            ingestion.embed_chunks,
            ingestion.activate_document,
            ingestion.mark_document_failed,
            reembed.reembed_plan,
            reembed.reembed_batch,
            reembed.reembed_canary,
            reembed.reembed_switch,
            reembed.reembed_drop_other_versions,
            PurgeActivities(res.sessions).purge_tombstones,
            RetentionActivities(
                res.sessions, res.redis, res.settings.transcript_retention_days
            ).retention_purge,
            erasure.erasure_plan,
            erasure.erase_conversations,
            erasure.shred_tenant_key,
            erasure.record_erasure,
            rollout.rollout_set_share,
            rollout.rollout_judge,
        ],
        workflow_runner=sandbox_runner(res.settings.data_dir / "pycache"),
        # SIGTERM: stop polling, let held activities finish this long (temporal.yaml `shutdown:`).
        graceful_shutdown_timeout=res.policy.shutdown.worker_grace,
        # Embedding is CPU-bound: a few documents at a time keep the machine responsive.
        max_concurrent_activities=2,
    )
