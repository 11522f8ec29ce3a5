"""The chat WebSocket (`/v1/ws`) with the `websockets` client: many turns over one socket, an
idempotent resend, resume after a dropped socket with no gap and no duplicate, cancel, a bad frame
answered with an error frame on a socket that stays usable, authentication by header or one-use
ticket (and the close code without either), and a slow reader the API holds a bounded outbox for."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import struct
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import websockets
from websockets.asyncio.client import ClientConnection

from api.services import chat_socket
from infra.config.endpoints import default_gguf
from tests.support.api_harness import ApiServer, api_key_of, isolated_settings, model_entry
from tests.support.fake_model import ScriptedModelServer
from tests.support.services import Services, db_rows

pytestmark = pytest.mark.timeout(300)
WORDS = [f" w{i}" for i in range(40)]


def ws_url(api: ApiServer, query: str = "") -> str:
    return api.url.replace("http://", "ws://") + "/v1/ws" + query


def connect(api: ApiServer, query: str = "", key: str | None = None) -> Any:
    headers = {"Authorization": f"Bearer {key or api_key_of(api)}"} if key != "" else None
    return websockets.connect(ws_url(api, query), additional_headers=headers, max_size=None)


async def frames_until(ws: ClientConnection, done: set[str], seen: list[dict[str, Any]]) -> None:
    """Read frames into ``seen`` until each turn in ``done`` has ended (done or error)."""
    ended: set[str] = set()
    while not done <= ended:
        frame = json.loads(await asyncio.wait_for(ws.recv(), 60))
        seen.append(frame)
        if frame["type"] in ("done", "error") and frame.get("turn_id"):
            ended.add(frame["turn_id"])


def text_of(frames: list[dict[str, Any]], turn_id: str) -> str:
    text = ""
    for f in frames:
        if f.get("turn_id") == turn_id:
            if f["type"] == "reset":
                text = ""
            elif f["type"] == "token":
                text += f["data"]["text"]
    return text


async def test_two_turns_over_one_socket_and_an_idempotent_resend(api: ApiServer, services: Services) -> None:
    convs = [await api.conversation(), await api.conversation()]
    async with connect(api) as ws:
        for i, conv in enumerate(convs):
            turn = {
                "type": "turn",
                "ref": f"r{i}",
                "conversation_id": conv,
                "content": "Say hi.",
                "max_tokens": 6,
            }
            await ws.send(json.dumps({**turn, "idempotency_key": f"ws-{conv}"}))
        accepted: dict[str, str] = {}
        seen: list[dict[str, Any]] = []
        while len(accepted) < 2:
            frame = json.loads(await asyncio.wait_for(ws.recv(), 60))
            seen.append(frame)
            if frame["type"] == "accepted":
                accepted[frame["ref"]] = frame["turn_id"]
        await frames_until(ws, set(accepted.values()), seen)
        # The same key again joins the same turn: its events replay, no second turn.
        await ws.send(
            json.dumps(
                {
                    "type": "turn",
                    "ref": "again",
                    "conversation_id": convs[0],
                    "content": "Say hi.",
                    "max_tokens": 6,
                    "idempotency_key": f"ws-{convs[0]}",
                }
            )
        )
        again: list[dict[str, Any]] = []
        while (first := json.loads(await asyncio.wait_for(ws.recv(), 60)))["type"] != "accepted":
            seen.append(first)  # the first turns' moderation verdicts, which follow their `done`
        assert first == {"type": "accepted", "ref": "again", "turn_id": accepted["r0"]}
        await frames_until(ws, {accepted["r0"]}, again)
    for ref, turn_id in accepted.items():
        kinds = [f["type"] for f in seen if f.get("turn_id") == turn_id]
        assert kinds[:2] == ["accepted", "turn"] and "token" in kinds and "done" in kinds, (ref, kinds)
        reply = text_of(seen, turn_id)
        assert reply and text_of(again, turn_id) == (reply if ref == "r0" else "")
    (count,) = db_rows(services, "SELECT count(*) FROM messages WHERE turn_id = %s", accepted["r0"])
    assert count == (2,)  # one question, one reply, though asked twice
    audits = db_rows(
        services,
        "SELECT count(*) FROM audit_events WHERE action = 'WS /v1/ws turn' AND object_id = %s",
        convs[0],
    )
    assert audits == [(2,)]


async def test_bad_frames_get_error_frames_and_the_socket_stays_usable(api: ApiServer) -> None:
    conv = await api.conversation()
    async with connect(api) as ws:
        for bad, code in (
            ("not json", "bad_frame"),
            ("[1, 2]", "bad_frame"),
            (json.dumps({"type": "dance"}), "bad_frame"),
            (json.dumps({"type": "turn", "ref": "x", "conversation_id": conv}), "validation_error"),
            (
                json.dumps(
                    {
                        "type": "turn",
                        "ref": "y",
                        "conversation_id": "5b3c7c0e-1111-4111-8111-111111111111",
                        "content": "hi",
                    }
                ),
                "404",
            ),
            (json.dumps({"type": "cancel", "turn_id": "turn-someone-elses"}), "404"),
            (
                json.dumps({"type": "resume", "turn_id": "turn-x", "last_event_id": "yesterday"}),
                "validation_error",
            ),
        ):
            await ws.send(bad)
            frame = json.loads(await asyncio.wait_for(ws.recv(), 30))
            assert (frame["type"], frame["code"]) == ("error", code), (bad, frame)
            assert frame["message"]
        await ws.send(
            json.dumps(
                {"type": "turn", "ref": "ok", "conversation_id": conv, "content": "Hi", "max_tokens": 3}
            )
        )
        accepted = json.loads(await asyncio.wait_for(ws.recv(), 60))
        assert accepted["type"] == "accepted" and accepted["ref"] == "ok"
        await frames_until(ws, {accepted["turn_id"]}, [])


async def test_without_a_key_the_socket_closes_4401_and_a_ticket_works_once(api: ApiServer) -> None:
    for query, key in (("", ""), ("", "tf_nope_nope"), ("?ticket=wst_made_up", "")):
        async with connect(api, query, key=key) as ws:
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), 10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == chat_socket.UNAUTHENTICATED
    made = await api.client.post("/v1/ws/tickets")
    assert made.status_code == 201, made.text
    ticket = made.json()
    assert ticket["url"] == f"/v1/ws?ticket={ticket['ticket']}" and ticket["expires_in_s"] == 60
    conv = await api.conversation()
    async with connect(api, f"?ticket={ticket['ticket']}", key="") as ws:  # a browser: no header
        await ws.send(json.dumps({"type": "turn", "conversation_id": conv, "content": "Hi", "max_tokens": 3}))
        assert json.loads(await asyncio.wait_for(ws.recv(), 60))["type"] == "accepted"
    async with connect(api, f"?ticket={ticket['ticket']}", key="") as ws:  # used: refused
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == chat_socket.UNAUTHENTICATED


@pytest_asyncio.fixture
async def slow_api(
    services: Services, tmp_path: Path
) -> AsyncIterator[tuple[ApiServer, ScriptedModelServer]]:
    """A model that takes about 4 s over its reply, on purpose: a socket to drop, a turn to cancel."""
    async with ScriptedModelServer("slow") as scripted:
        scripted.script.reply = WORDS
        scripted.script.token_delay_s = 0.1
        settings = isolated_settings(
            services, tmp_path, models={"slow": model_entry(scripted.url)}, model_path=default_gguf()
        )
        async with ApiServer(settings) as api:
            yield api, scripted


async def test_resume_after_a_dropped_socket_has_no_gap_and_no_duplicate_and_cancel_stops_a_turn(
    slow_api: tuple[ApiServer, ScriptedModelServer],
) -> None:
    api, _ = slow_api
    conv = await api.conversation()
    first: list[dict[str, Any]] = []
    async with connect(api) as ws:
        await ws.send(json.dumps({"type": "turn", "conversation_id": conv, "content": "Count."}))
        while sum(f["type"] == "token" for f in first) < 5:
            first.append(json.loads(await asyncio.wait_for(ws.recv(), 30)))
        turn_id = first[0]["turn_id"]
    # The socket is gone mid-reply; the turn goes on. A new socket resumes after the last event seen.
    rest: list[dict[str, Any]] = []
    async with connect(api) as ws:
        await ws.send(json.dumps({"type": "resume", "turn_id": turn_id, "last_event_id": first[-1]["id"]}))
        await frames_until(ws, {turn_id}, rest)
    tokens = [f for f in first + rest if f["type"] == "token"]
    assert "".join(f["data"]["text"] for f in tokens) == "".join(WORDS)
    assert len({f["id"] for f in tokens}) == len(tokens) == len(WORDS)

    conv = await api.conversation()
    async with connect(api) as ws:
        await ws.send(json.dumps({"type": "turn", "conversation_id": conv, "content": "Count."}))
        seen: list[dict[str, Any]] = []
        while sum(f["type"] == "token" for f in seen) < 3:
            seen.append(json.loads(await asyncio.wait_for(ws.recv(), 30)))
        await ws.send(json.dumps({"type": "cancel", "turn_id": seen[0]["turn_id"]}))
        await frames_until(ws, {seen[0]["turn_id"]}, seen)
    done = next(f for f in seen if f["type"] == "done")
    assert done["data"]["finish_reason"] == "cancelled"
    assert len([f for f in seen if f["type"] == "token"]) < len(WORDS)


async def test_a_leaving_server_closes_its_sockets_1012_and_the_turn_resumes_on_another(
    services: Services, tmp_path: Path
) -> None:
    async with ScriptedModelServer("slow") as scripted:
        scripted.script.reply = WORDS
        scripted.script.token_delay_s = 0.05
        settings = isolated_settings(
            services, tmp_path, models={"slow": model_entry(scripted.url)}, model_path=default_gguf()
        )
        async with ApiServer(settings) as leaving, ApiServer(settings) as staying:
            conv = await leaving.conversation()
            first: list[dict[str, Any]] = []
            async with connect(leaving) as ws:
                await ws.send(json.dumps({"type": "turn", "conversation_id": conv, "content": "Count."}))
                while sum(f["type"] == "token" for f in first) < 5:
                    first.append(json.loads(await asyncio.wait_for(ws.recv(), 30)))
                leaving.app.state.drain.begin()
                # Frames already on their way may still come; then the documented close code.
                with pytest.raises(websockets.ConnectionClosed) as closed:
                    while True:
                        first.append(json.loads(await asyncio.wait_for(ws.recv(), 30)))
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1012
            assert "done" not in [f["type"] for f in first]  # the turn outlives the socket
            # A leaving server takes no new sockets' turns either; the other one resumes it.
            turn_id = first[0]["turn_id"]
            rest: list[dict[str, Any]] = []
            async with connect(staying) as ws:
                resume = {"type": "resume", "turn_id": turn_id, "last_event_id": first[-1]["id"]}
                await ws.send(json.dumps(resume))
                await frames_until(ws, {turn_id}, rest)
            tokens = [f for f in first + rest if f["type"] == "token"]
            assert "".join(f["data"]["text"] for f in tokens) == "".join(WORDS)
            assert len({f["id"] for f in tokens}) == len(tokens)


class RawSocket:
    """A WebSocket client written over a plain socket, so that "not reading" means not reading: no
    library reads ahead into its own buffers. Its receive buffer is 4 KB."""

    def __init__(self, port: int, key: str) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.connect(("127.0.0.1", port))
        nonce = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            (
                f"GET /v1/ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {nonce}\r\nSec-WebSocket-Version: 13\r\n"
                f"Authorization: Bearer {key}\r\n\r\n"
            ).encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            head += self.sock.recv(1)
        assert head.startswith(b"HTTP/1.1 101"), head
        self.pending = b""

    def send(self, text: str) -> None:
        data, mask = text.encode(), os.urandom(4)
        length = (
            bytes([0x80 | len(data)])
            if len(data) < 126
            else bytes([0x80 | 126]) + struct.pack("!H", len(data))
        )
        self.sock.sendall(bytes([0x81]) + length + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data)))

    def _take(self, n: int) -> bytes:
        while len(self.pending) < n:
            chunk = self.sock.recv(65536)
            assert chunk, "the server closed the socket"
            self.pending += chunk
        out, self.pending = self.pending[:n], self.pending[n:]
        return out

    def recv(self) -> dict[str, Any]:
        first, second = self._take(2)
        size = second & 0x7F
        if size == 126:
            (size,) = struct.unpack("!H", self._take(2))
        elif size == 127:
            (size,) = struct.unpack("!Q", self._take(8))
        payload = self._take(size)
        return json.loads(payload) if first & 0x0F == 1 else self.recv()  # skips pings


async def test_a_slow_reader_costs_the_api_a_bounded_outbox(services: Services, tmp_path: Path) -> None:
    # 1,000 tokens of 400 bytes to a client that stops reading, from a server whose sockets send
    # 4 KB at a time (kernel buffers otherwise grow to megabytes): once the outbox and the buffers
    # are full, the server stops reading the turn's events for it (the turn itself runs on).
    async with ScriptedModelServer("firehose") as scripted:
        scripted.script.reply = ["x" * 399 + " "] * 1000
        settings = isolated_settings(
            services, tmp_path, models={"firehose": model_entry(scripted.url)}, model_path=default_gguf()
        )
        async with ApiServer(settings, send_buffer=4096) as api:
            conv = await api.conversation()
            raw = await asyncio.to_thread(RawSocket, api.port, api_key_of(api))
            turn = {"type": "turn", "conversation_id": conv, "content": "Go.", "max_tokens": 1000}
            raw.send(json.dumps(turn))
            accepted = await asyncio.to_thread(raw.recv)
            turn_id = accepted["turn_id"]
            deadline = time.monotonic() + 120
            while (await api.client.get(f"/v1/turns/{turn_id}")).json()["status"] == "running":
                assert time.monotonic() < deadline
                await asyncio.sleep(1)
            logged = await api.app.state.resources.events.read_all(turn_id)
            published = sum(e.type == "token" for e in logged)
            (held,) = [s for s in chat_socket.LIVE if turn_id in s.following]
            # The whole reply is in the event log; this client was relayed only what its socket and
            # the outbox hold, and the outbox is at its bound.
            assert published >= 900
            assert held.outbox.qsize() <= chat_socket.OUTBOX
            assert held.relayed < published, (held.relayed, published)
            # Reading now, it gets every frame, in order, none lost.
            frames: list[dict[str, Any]] = []
            while not frames or frames[-1]["type"] != "done":
                frames.append(await asyncio.to_thread(raw.recv))
            raw.sock.close()
    tokens = [f["data"]["index"] for f in frames if f["type"] == "token"]
    assert tokens == list(range(published))
