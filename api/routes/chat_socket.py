"""The chat WebSocket (`/v1/ws`, api/services/chat_socket.py) and the tickets a browser opens it with."""

from __future__ import annotations

from fastapi import APIRouter, Request, WebSocket
from pydantic import BaseModel

from activities.adapters.ws_tickets import TTL_S
from api.core.deps import ResourcesDep
from api.core.principals import PrincipalCache
from api.routes.conversations import require_conversation
from api.services.chat_socket import FORBIDDEN, SERVICE_RESTART, UNAUTHENTICATED, ChatSocket
from infra.config.residency import residency_gaps
from infra.runtime.resources import Resources

router = APIRouter(tags=["websocket"])
# The socket authenticates itself (a header or a ticket): no HTTP dependency runs on it.
socket_router = APIRouter(tags=["websocket"])


class WsTicket(BaseModel):
    ticket: str
    expires_in_s: int
    # Where to open the socket with it (relative to the API).
    url: str


@router.post("/v1/ws/tickets", status_code=201)
async def issue_ticket(request: Request, res: ResourcesDep) -> WsTicket:
    """A one-use ticket, for a minute, to open `/v1/ws?ticket=...` as this key (a browser cannot send
    an Authorization header on a WebSocket, and a key never goes in a URL)."""
    ticket = await res.ws_tickets.issue(request.state.principal)
    return WsTicket(ticket=ticket, expires_in_s=TTL_S, url=f"/v1/ws?ticket={ticket}")


@socket_router.websocket("/v1/ws")
async def chat_socket(websocket: WebSocket, ticket: str | None = None) -> None:
    res: Resources = websocket.app.state.resources
    principals: PrincipalCache = websocket.app.state.principals
    drain = websocket.app.state.drain
    # Accepted first, so that a refusal reaches the client as a close code it can read.
    await websocket.accept()
    auth = websocket.headers.get("authorization", "")
    if auth[:7].lower() == "bearer ":
        principal = await principals.find(auth[7:].strip())
    else:
        principal = await res.ws_tickets.redeem(ticket) if ticket else None
    if principal is None:
        await websocket.close(
            UNAUTHENTICATED, "an API key (Authorization: Bearer) or a ticket (POST /v1/ws/tickets) is needed"
        )
        return
    if not principal.may("chat") or residency_gaps(principal.residency, res.policy.stores):
        await websocket.close(FORBIDDEN, "this key may not chat here (its scope, or its tenant's residency)")
        return
    if drain.draining:
        await websocket.close(SERVICE_RESTART, "this server is leaving: connect again")
        return
    async with drain.stream():
        await ChatSocket(websocket, res, principal, drain, require_conversation).run()
