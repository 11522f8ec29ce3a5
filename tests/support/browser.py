"""Headless Chromium (Debian's, driven by Playwright; it never downloads a browser) for the tests of
the pages the API serves."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from playwright.async_api import Browser, Page, async_playwright

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Headless on a machine with no display and no outside network (what .ci/run installs is Debian's build).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    async with async_playwright() as p:
        launched = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            await launched.close()


async def watched(browser: Browser) -> tuple[Page, list[str]]:
    """A fresh page (its own storage) and the console errors and uncaught exceptions it reports."""
    page = await (await browser.new_context()).new_page()
    problems: list[str] = []
    page.on("console", lambda m: problems.append(f"console: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(f"page: {e}"))
    return page, problems
