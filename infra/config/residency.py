"""Data residency of the stores: where each keeps a tenant's data, as tags a tenant's residency must find.

A tenant's residency tags (e.g. `eu`, `on-prem`) must all be on every store that holds its data, as on
every model that serves it (activities/logic/routing.py). The stores and their tags are declared in
`temporal.yaml` (`stores:`); a tenant they do not satisfy is refused, not served somewhere else.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

StoreName = Literal["postgres", "redis", "temporal", "embedder"]


class StoreSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    residency: list[str] = Field(default_factory=list)
    holds: str = ""  # what of a tenant's it keeps, for operators and error messages


def residency_gaps(tenant_tags: Iterable[str], stores: Mapping[StoreName, StoreSpec]) -> dict[str, list[str]]:
    """Store → the tenant's tags it lacks; empty when every store may hold the tenant's data."""
    wanted = set(tenant_tags)
    gaps = {name: sorted(wanted - set(spec.residency)) for name, spec in stores.items()}
    return {name: missing for name, missing in sorted(gaps.items()) if missing}


def describe_gaps(gaps: Mapping[str, list[str]]) -> str:
    return "; ".join(f"{store} lacks {', '.join(tags)}" for store, tags in gaps.items())
