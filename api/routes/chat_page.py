"""The chat page: one static page (no build step) where a person chats with the key they enter."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

router = APIRouter(tags=["chat"])
PAGE = Path(__file__).resolve().parent.parent / "static" / "chat.html"


@router.get("/chat", response_class=HTMLResponse, include_in_schema=False)
async def chat_page() -> HTMLResponse:
    # Served without a key, as the dashboard is: the page holds no data until a key is entered.
    return HTMLResponse(PAGE.read_text(encoding="utf-8"), headers={"Cache-Control": "no-cache"})
