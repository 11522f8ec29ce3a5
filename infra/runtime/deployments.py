"""Worker Versioning: each kind of turnflow worker is a Worker Deployment (`<name>-chat`, `-batch`,
`-ingest`), each build a version of it. Chat turns (and the other workflows of the chat and batch
workers, all short-lived) are pinned: a run finishes on the build it started on, and an old build
drains. The ingest worker's workflows (ingestion of large documents, re-embedding, retention, purges,
erasures) may outlive a build, so they auto-upgrade to the current one and keep `workflow.patched` for
their changes mid-run.

The behaviour is each worker's default rather than each workflow's decorator: a decorated workflow
cannot run on an unversioned worker (the time-skipping test server, TURNFLOW_WORKER_VERSIONING=false).

Thin over Temporal's Worker Deployment API: what `turnflow deploy` shows and changes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from temporalio.api.deployment.v1 import WorkerDeploymentVersion as VersionProto
from temporalio.api.enums.v1 import RoutingConfigUpdateState, WorkerDeploymentVersionStatus
from temporalio.api.workflowservice.v1 import (
    DescribeWorkerDeploymentRequest,
    DescribeWorkerDeploymentVersionRequest,
    SetWorkerDeploymentCurrentVersionRequest,
    SetWorkerDeploymentRampingVersionRequest,
)
from temporalio.client import Client
from temporalio.common import VersioningBehavior, WorkerDeploymentVersion
from temporalio.service import RPCError, RPCStatusCode
from temporalio.worker import WorkerDeploymentConfig

from infra.config.build import build_id
from infra.config.settings import WORKER_KINDS, Settings, WorkerKind
from infra.runtime.pollers import recent_pollers

log = logging.getLogger("turnflow.deploy")

KINDS = WORKER_KINDS
BEHAVIOUR = {
    "chat": VersioningBehavior.PINNED,
    "batch": VersioningBehavior.PINNED,
    "ingest": VersioningBehavior.AUTO_UPGRADE,
}


def deployment_of(settings: Settings, kind: WorkerKind) -> str:
    return f"{settings.deployment_name}-{kind}"


def deployment_config(settings: Settings, kind: WorkerKind) -> WorkerDeploymentConfig | None:
    """What a worker of this kind runs as: a version of its deployment (None: unversioned)."""
    if not settings.worker_versioning:
        return None
    return WorkerDeploymentConfig(
        version=WorkerDeploymentVersion(deployment_of(settings, kind), build_id(settings.build_id)),
        use_worker_versioning=True,
        default_versioning_behavior=BEHAVIOUR[kind],
    )


@dataclass
class BuildStatus:
    build_id: str
    status: str  # current, ramping, draining, drained, inactive
    ramp_percentage: float | None = None
    task_queues: list[str] = field(default_factory=list)
    pollers: int = 0
    open_runs: int = 0
    last_current: float | None = None  # when it last stopped or started being current (epoch s)


@dataclass
class DeploymentStatus:
    name: str
    current: str | None
    ramping: str | None
    ramp_percentage: float
    builds: list[BuildStatus]
    # False while a routing change is still reaching the task queues: for those seconds (~5 on the dev
    # server, bench/REPORT.md) a turn Temporal routes by the new rule can wait for its first step.
    settled: bool = True

    def previous(self) -> str | None:
        """The build that was current most recently before this one: where a rollback goes."""
        older = [b for b in self.builds if b.build_id != self.current and b.last_current is not None]
        return max(older, key=lambda b: b.last_current or 0).build_id if older else None


T = TypeVar("T")


async def _patiently(call: Callable[[], Awaitable[T]], attempts: int = 40) -> T:
    """A Worker Deployment API call, again while Temporal says this deployment is busy (it serialises
    each deployment's requests: a describe right after a routing change is refused for a moment)."""
    for attempt in range(attempts):
        try:
            return await call()
        except RPCError as exc:
            if exc.status != RPCStatusCode.RESOURCE_EXHAUSTED or attempt == attempts - 1:
                raise
            await asyncio.sleep(0.25)
    raise AssertionError("unreachable")


def _status_name(value: WorkerDeploymentVersionStatus.ValueType) -> str:
    return WorkerDeploymentVersionStatus.Name(value).removeprefix("WORKER_DEPLOYMENT_VERSION_STATUS_").lower()


async def describe(client: Client, deployment: str, *, details: bool = True) -> DeploymentStatus | None:
    """The deployment's routing and its builds (None: no worker of it ever polled); with ``details``,
    each build's task queues, pollers and open runs (runs of a pinned build still to finish there)."""
    service, namespace = client.workflow_service, client.namespace
    try:
        request = DescribeWorkerDeploymentRequest(namespace=namespace, deployment_name=deployment)
        info = (await _patiently(lambda: service.describe_worker_deployment(request))).worker_deployment_info
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return None
        raise
    routing = info.routing_config
    builds = []
    for summary in info.version_summaries:
        build = BuildStatus(
            build_id=summary.deployment_version.build_id,
            status=_status_name(summary.status),
            last_current=(
                summary.last_current_time.ToSeconds()
                if summary.HasField("last_current_time")
                else summary.current_since_time.ToSeconds()
                if summary.HasField("current_since_time")
                else None
            ),
        )
        if build.build_id == routing.ramping_deployment_version.build_id:
            build.ramp_percentage = routing.ramping_version_percentage
        if details:
            await _fill_details(client, deployment, build)
        builds.append(build)
    return DeploymentStatus(
        name=deployment,
        current=routing.current_deployment_version.build_id or None,
        ramping=routing.ramping_deployment_version.build_id or None,
        ramp_percentage=routing.ramping_version_percentage,
        builds=sorted(builds, key=lambda b: b.last_current or 0, reverse=True),
        settled=info.routing_config_update_state
        != RoutingConfigUpdateState.ROUTING_CONFIG_UPDATE_STATE_IN_PROGRESS,
    )


async def _fill_details(client: Client, deployment: str, build: BuildStatus) -> None:
    queues = await _queues_of(client, deployment, build.build_id)
    build.task_queues = queues
    pollers: set[str] = set()
    for queue in queues:
        pollers |= set(await recent_pollers(client, queue, build.build_id))
    build.pollers = len(pollers)
    query = (
        f"TemporalWorkerDeploymentVersion = '{deployment}:{build.build_id}' AND ExecutionStatus = 'Running'"
    )
    build.open_runs = (await client.count_workflows(query)).count


async def make_current(client: Client, deployment: str, build: str, identity: str) -> None:
    request = SetWorkerDeploymentCurrentVersionRequest(
        namespace=client.namespace, deployment_name=deployment, build_id=build, identity=identity
    )
    await _patiently(lambda: client.workflow_service.set_worker_deployment_current_version(request))


async def ramp(client: Client, deployment: str, build: str, percentage: float, identity: str) -> None:
    request = SetWorkerDeploymentRampingVersionRequest(
        namespace=client.namespace,
        deployment_name=deployment,
        build_id=build,
        percentage=percentage,
        identity=identity,
    )
    await _patiently(lambda: client.workflow_service.set_worker_deployment_ramping_version(request))


async def wait_until_settled(client: Client, deployment: str, timeout_s: float = 60.0) -> float:
    """Until the deployment's last routing change has reached its task queues; the seconds it took."""
    began = time.monotonic()
    while True:
        status = await describe(client, deployment, details=False)
        if status is None or status.settled:
            return time.monotonic() - began
        if time.monotonic() - began > timeout_s:
            raise TimeoutError(f"{deployment}: routing change still propagating after {timeout_s:g} s")
        await asyncio.sleep(0.25)


async def wait_until_polled(
    client: Client,
    deployment: str,
    build: str,
    task_queues: list[str],
    timeout_s: float = 30.0,
    identities: set[str] | None = None,
) -> None:
    """Until workers of the build poll each of these task queues now (of ``identities``, when given):
    a build can only become current once it serves every queue the current one does, and a turn
    routed to a build whose workers are gone (or still starting) waits for them. The queues a version
    has registered are not enough: they stay listed after its workers leave."""
    deadline = time.monotonic() + timeout_s
    while not await _polls_now(client, deployment, build, task_queues, identities):
        if time.monotonic() > deadline:
            queues = ", ".join(task_queues)
            raise TimeoutError(
                f"no worker of build {build} of {deployment} polls {queues} (waited {timeout_s:g} s)"
            )
        await asyncio.sleep(0.5)


async def _polls_now(
    client: Client, deployment: str, build: str, task_queues: list[str], identities: set[str] | None
) -> bool:
    if not set(task_queues) <= set(await _queues_of(client, deployment, build)):
        return False
    for queue in task_queues:
        polling = set(await recent_pollers(client, queue, build))
        if not polling or (identities is not None and not identities <= polling):
            return False
    return True


async def _queues_of(client: Client, deployment: str, build: str) -> list[str]:
    """The task queues the build's workers have polled (none while it is unknown, or Temporal asks
    this deployment's callers to slow down)."""
    version = VersionProto(deployment_name=deployment, build_id=build)
    try:
        info = (
            await client.workflow_service.describe_worker_deployment_version(
                DescribeWorkerDeploymentVersionRequest(namespace=client.namespace, deployment_version=version)
            )
        ).worker_deployment_version_info
    except RPCError as exc:
        if exc.status in (RPCStatusCode.NOT_FOUND, RPCStatusCode.RESOURCE_EXHAUSTED):
            return []
        raise
    return sorted({q.name for q in info.task_queue_infos})


async def promote_own_build(client: Client, settings: Settings, queues: dict[WorkerKind, str]) -> list[str]:
    """Make this process's build current in each kind's deployment, once its workers poll the queues
    (``queues``: kind → task queue): how `turnflow up` ships a new build with no step of its own.
    The deployments where it changed something."""
    build, identity, changed = build_id(settings.build_id), f"promote-on-start@{settings.api_host}", []
    for kind, queue in queues.items():
        deployment = deployment_of(settings, kind)
        await wait_until_polled(client, deployment, build, [queue])
        status = await describe(client, deployment, details=False)
        if status is None or status.current != build:
            await make_current(client, deployment, build, identity)
            changed.append(deployment)
    return changed


class EagerGate:
    """Whether the API may start a turn eagerly on its own worker. An eager start runs where it is
    started whatever the routing says (measured on the dev server: after build B became current, an
    API whose worker is build A still ran its eager starts on A), so the API starts eagerly only while
    its build is its chat deployment's current one with no ramp; otherwise it starts normally and
    Temporal routes the turn (one more round trip before the first step: bench/REPORT.md)."""

    def __init__(self, client: Client, deployment: str, build: str, refresh_s: float = 5.0) -> None:
        self.client, self.deployment, self.build, self.refresh_s = client, deployment, build, refresh_s
        self.allowed = True

    async def refresh(self) -> None:
        status = await describe(self.client, self.deployment, details=False)
        if status is not None and not status.settled:
            # Until a routing change has propagated, routed starts can wait seconds for their first
            # step, while an eager one runs at once on this build (still polling, its runs pinned).
            return
        # No current build yet (a first start): routing has nowhere else to send it.
        self.allowed = (
            status is None or not status.current or (status.current == self.build and not status.ramping)
        )

    async def run(self) -> None:
        while True:
            try:
                await self.refresh()
            except RPCError as exc:  # Temporal unreachable: keep the last answer
                log.debug("deployment routing not refreshed: %s", exc)
            await asyncio.sleep(self.refresh_s)
