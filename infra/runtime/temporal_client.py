"""One way to connect to Temporal, so every process uses the same data converter."""

from __future__ import annotations

import dataclasses

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import DataConverter, PayloadCodec

from infra.telemetry.setup import Telemetry


def data_converter(codec: PayloadCodec | None) -> DataConverter:
    """Pydantic payloads, encrypted by ``codec`` (infra/runtime/payload_codec.py) when one is given."""
    return dataclasses.replace(pydantic_data_converter, payload_codec=codec)


async def connect_temporal(
    address: str,
    namespace: str,
    *,
    lazy: bool = False,
    codec: PayloadCodec | None = None,
    telemetry: Telemetry | None = None,
) -> Client:
    """``codec``: every client that starts workflows or reads their payloads passes the deployment's
    (readiness probes, which read none, need not). ``telemetry``: the process's, so that workflows
    and activities this client starts or runs are traced and the SDK's metrics are exported."""
    # lazy: the API must start (and report 503) even while Temporal is down.
    return await Client.connect(
        address,
        namespace=namespace,
        data_converter=data_converter(codec),
        lazy=lazy,
        plugins=telemetry.temporal_plugins if telemetry else [],
        runtime=telemetry.runtime if telemetry else None,
    )
