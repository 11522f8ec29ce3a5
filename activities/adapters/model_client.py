"""The inference client: huggingface_hub's, pointed at TGI or any OpenAI-compatible server."""

from __future__ import annotations

from huggingface_hub import AsyncInferenceClient


def make_inference_client(
    model_url: str, token: str | None = None, timeout_s: float = 60.0
) -> AsyncInferenceClient:
    # Temporal owns retries; the client makes exactly one attempt per call.
    return AsyncInferenceClient(base_url=f"{model_url}/v1", api_key=token, timeout=timeout_s)
