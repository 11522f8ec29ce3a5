"""Which build of turnflow this process runs: the Worker Deployment Version's build id.

TURNFLOW_BUILD_ID when set (an image tag, a commit); otherwise derived from the code itself: a hash of
every module of turnflow's packages and of the Temporal SDK's version, so two different builds never
share an id and every process of one build (the API's eager worker, the worker processes) agrees on it,
whatever each has imported.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from importlib import metadata

from infra.config.settings import REPO_ROOT

PACKAGES = ("workflows", "activities", "api", "workers", "db", "infra")


@lru_cache
def code_build_id() -> str:
    digest = hashlib.sha256(f"temporalio {metadata.version('temporalio')}".encode())
    for package in PACKAGES:
        # The code, and the rules the activities ship as package data (activities/logic/safety.yaml).
        paths = [*(REPO_ROOT / package).rglob("*.py"), *(REPO_ROOT / package).rglob("safety.yaml")]
        for path in sorted(paths):
            digest.update(str(path.relative_to(REPO_ROOT)).encode() + b"\0" + path.read_bytes())
    try:
        release = metadata.version("turnflow")
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        release = "0"
    return f"{release}-{digest.hexdigest()[:12]}"


def build_id(configured: str | None) -> str:
    return configured or code_build_id()
