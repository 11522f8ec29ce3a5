"""A FAKE model server for load benchmarks: OpenAI-compatible streaming at a fixed, fast pace, so that
what a load run measures is the platform's own cost, not a CPU model's. Never used for real figures.

    .venv/bin/python -m bench.fast_fake_model --port 8099 --tokens 32 --token-ms 5 --first-token-ms 20
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import AsyncIterator

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

MODEL = "fast-fake"


def app(tokens: int, token_ms: float, first_token_ms: float, token_chars: int = 0) -> Starlette:
    async def chat(request: Request) -> StreamingResponse | JSONResponse:
        body = await request.json()
        n = min(tokens, int(body.get("max_tokens") or tokens))

        def chunk(delta: dict[str, str], finish: str | None = None) -> str:
            payload = {
                "id": "fake",
                "object": "chat.completion.chunk",
                "created": int(time.time()),
                "model": MODEL,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }
            return f"data: {json.dumps(payload)}\n\n"

        async def stream() -> AsyncIterator[str]:
            await asyncio.sleep(first_token_ms / 1000)
            for i in range(n):
                yield chunk({"content": f" word{i}".ljust(token_chars, ".")})
                await asyncio.sleep(token_ms / 1000)
            yield chunk({}, "length")
            yield "data: [DONE]\n\n"

        if not body.get("stream"):
            return JSONResponse({"error": "the fake server only streams"}, status_code=400)
        return StreamingResponse(stream(), media_type="text/event-stream")

    async def models(_: Request) -> JSONResponse:
        return JSONResponse({"object": "list", "data": [{"id": MODEL, "object": "model"}]})

    return Starlette(
        routes=[Route("/v1/chat/completions", chat, methods=["POST"]), Route("/v1/models", models)]
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--token-ms", type=float, default=5.0)
    parser.add_argument("--first-token-ms", type=float, default=20.0)
    parser.add_argument("--token-chars", type=int, default=0, help="pad each token's text to this length")
    args = parser.parse_args()
    server = app(args.tokens, args.token_ms, args.first_token_ms, args.token_chars)
    uvicorn.run(server, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
