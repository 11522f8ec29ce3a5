"""TLS to Temporal, mutual: the API and a worker process reach Temporal only through a TLS terminator that
demands a client certificate, and a turn completes; a wrong CA or no client certificate is refused."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest
from temporalio.service import TLSConfig

from infra.runtime.temporal_client import connect_temporal, temporal_tls
from tests.support.api_harness import ApiServer, isolated_settings
from tests.support.processes import start_worker, wait_for_log
from tests.support.services import Services
from tests.support.tls import make_certificates, make_client_certificate
from tests.support.tls_proxy import TlsProxy


async def test_api_and_worker_reach_temporal_over_mutual_tls(services: Services, tmp_path: Path) -> None:
    certs = make_certificates(tmp_path / "tls", ["localhost"])
    client_cert, client_key = make_client_certificate(certs, "turnflow-worker")
    async with TlsProxy(services.settings.temporal_address or "", certs, client_ca=certs.ca) as proxy:
        tls = {
            "temporal_address": proxy.address,
            "temporal_tls_ca_file": certs.ca,
            "temporal_tls_cert_file": client_cert,
            "temporal_tls_key_file": client_key,
        }
        # No worker in the API process: the turn runs only if the worker process got in too.
        settings = isolated_settings(services, tmp_path, api_worker=False, **tls)
        log = tmp_path / "worker.log"
        env = {f"TURNFLOW_{k.upper()}": str(v) for k, v in tls.items() if k != "temporal_address"}
        worker = start_worker(settings, log, **env)
        try:
            await wait_for_log(log, "worker polling")
            async with ApiServer(settings) as api:
                conv = await api.conversation()
                resp = await api.client.post(
                    f"/v1/conversations/{conv}/messages",
                    json={"content": "Hello over TLS", "stream": False, "max_tokens": 4},
                )
        finally:
            worker.send_signal(signal.SIGTERM)
            # Off the loop: the proxy that carries the worker's shutdown calls runs on it.
            await asyncio.to_thread(worker.wait, 60)
    assert resp.status_code == 200, resp.text
    assert resp.json()["status"] == "completed" and resp.json()["text"]
    assert proxy.connections >= 2  # the API's client and the worker's


async def test_a_wrong_ca_or_no_client_certificate_is_refused(services: Services, tmp_path: Path) -> None:
    certs = make_certificates(tmp_path / "tls", ["localhost"])
    other = make_certificates(tmp_path / "other", ["localhost"], ca_name="someone else's CA")
    client_cert, client_key = make_client_certificate(certs, "turnflow-api")
    async with TlsProxy(services.settings.temporal_address or "", certs, client_ca=certs.ca) as proxy:
        good = TLSConfig(
            server_root_ca_cert=certs.ca.read_bytes(),
            client_cert=client_cert.read_bytes(),
            client_private_key=client_key.read_bytes(),
        )
        # A connect that is not lazy asks the server for its system info: the handshake held.
        client = await connect_temporal(proxy.address, "default", tls=good)
        assert client.namespace == "default" and proxy.connections == 1
        wrong_ca = TLSConfig(
            server_root_ca_cert=other.ca.read_bytes(),
            client_cert=client_cert.read_bytes(),
            client_private_key=client_key.read_bytes(),
        )
        with pytest.raises(RuntimeError):
            await connect_temporal(proxy.address, "default", tls=wrong_ca)
        no_client_cert = TLSConfig(server_root_ca_cert=certs.ca.read_bytes())
        with pytest.raises(RuntimeError):
            await connect_temporal(proxy.address, "default", tls=no_client_cert)


def test_the_settings_make_the_tls_config(services: Services, tmp_path: Path) -> None:
    certs = make_certificates(tmp_path / "tls", ["temporal.internal"])
    cert, key = make_client_certificate(certs, "w")
    settings = services.settings.model_copy(
        update={
            "temporal_tls_ca_file": certs.ca,
            "temporal_tls_cert_file": cert,
            "temporal_tls_key_file": key,
            "temporal_tls_server_name": "temporal.internal",
        }
    )
    tls = temporal_tls(settings)
    assert isinstance(tls, TLSConfig)
    assert tls.server_root_ca_cert == certs.ca.read_bytes() and tls.domain == "temporal.internal"
    assert tls.client_cert == cert.read_bytes() and tls.client_private_key == key.read_bytes()
    assert temporal_tls(services.settings) is False  # the embedded dev server: plain
    cloud = services.settings.model_copy(update={"temporal_api_key": "k"})
    assert temporal_tls(cloud) == TLSConfig()  # an API key: TLS with the system's roots
    with pytest.raises(ValueError, match="KEY_FILE"):
        temporal_tls(services.settings.model_copy(update={"temporal_tls_cert_file": cert}))
