"""One way to connect to Temporal, so every process uses the same data converter."""

from __future__ import annotations

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter


async def connect_temporal(address: str, namespace: str, *, lazy: bool = False) -> Client:
    # lazy: the API must start (and report 503) even while Temporal is down.
    return await Client.connect(
        address, namespace=namespace, data_converter=pydantic_data_converter, lazy=lazy
    )
