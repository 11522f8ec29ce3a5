"""Request dependencies as Annotated aliases (the FastAPI full-stack template's style)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from infra.runtime.resources import Resources


def get_resources(request: Request) -> Resources:
    res: Resources = request.app.state.resources
    return res


ResourcesDep = Annotated[Resources, Depends(get_resources)]
