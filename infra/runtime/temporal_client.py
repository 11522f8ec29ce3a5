"""One way to connect to Temporal, so every process uses the same data converter."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import (
    DataConverter,
    DefaultFailureConverter,
    DefaultFailureConverterWithEncodedAttributes,
    PayloadCodec,
)
from temporalio.service import TLSConfig

from infra.config.settings import Settings
from infra.telemetry.setup import Telemetry


def data_converter(codec: PayloadCodec | None) -> DataConverter:
    """Pydantic payloads, encrypted by ``codec`` (infra/runtime/payload_codec.py) when one is given.

    With a codec, failures are encrypted too: the default failure converter leaves a failure's message
    and stack trace in plain text in history, and they quote inputs and model servers' error bodies.
    Encoded, history holds "Encoded failure" and an encrypted payload that the codec server (the web
    UI's codec endpoint) and `turnflow replay` open with the deployment's keys."""
    failures = DefaultFailureConverterWithEncodedAttributes if codec else DefaultFailureConverter
    return dataclasses.replace(pydantic_data_converter, payload_codec=codec, failure_converter_class=failures)


def temporal_tls(settings: Settings) -> TLSConfig | bool:
    """TLS to Temporal as configured: a private CA, a client certificate (mTLS), a server name; or the
    system's roots (Temporal Cloud with an API key). False: plain (the embedded dev server)."""
    if not settings.temporal_uses_tls:
        return False
    if settings.temporal_tls_cert_file and not settings.temporal_tls_key_file:
        raise ValueError("TURNFLOW_TEMPORAL_TLS_CERT_FILE needs TURNFLOW_TEMPORAL_TLS_KEY_FILE")
    return TLSConfig(
        server_root_ca_cert=_read(settings.temporal_tls_ca_file),
        domain=settings.temporal_tls_server_name,
        client_cert=_read(settings.temporal_tls_cert_file),
        client_private_key=_read(settings.temporal_tls_key_file),
    )


def _read(path: Path | None) -> bytes | None:
    return path.read_bytes() if path else None


async def connect_temporal(
    address: str,
    namespace: str,
    *,
    lazy: bool = False,
    codec: PayloadCodec | None = None,
    telemetry: Telemetry | None = None,
    tls: TLSConfig | bool = False,
    api_key: str | None = None,
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
        tls=tls,
        api_key=api_key,
        plugins=telemetry.temporal_plugins if telemetry else [],
        runtime=telemetry.runtime if telemetry else None,
    )
