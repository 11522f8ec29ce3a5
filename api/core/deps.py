"""Request dependencies as Annotated aliases (the FastAPI full-stack template's style)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from api.core.drain import Drain
from api.core.errors import ApiError
from api.core.principals import PrincipalCache
from infra.runtime.resources import Resources


def get_resources(request: Request) -> Resources:
    res: Resources = request.app.state.resources
    return res


ResourcesDep = Annotated[Resources, Depends(get_resources)]


def get_principals(request: Request) -> PrincipalCache:
    principals: PrincipalCache = request.app.state.principals
    return principals


PrincipalsDep = Annotated[PrincipalCache, Depends(get_principals)]


def get_drain(request: Request) -> Drain:
    drain: Drain = request.app.state.drain
    return drain


DrainDep = Annotated[Drain, Depends(get_drain)]


def refuse_while_draining(drain: DrainDep) -> None:
    """New turns and new streams go to another process while this one leaves (api/core/drain.py)."""
    if drain.draining:
        raise ApiError(
            503,
            "this server is shutting down; retry and another one will take the request",
            code="draining",
            headers={"Retry-After": "1"},
            retryable=True,
        )
