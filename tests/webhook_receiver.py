"""A real webhook receiver for the tests: an aiohttp server on loopback that records every
request and answers what the test scripts (a status, a body, a pause)."""

from __future__ import annotations

import asyncio
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.conftest import _free_port


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def delivery(self) -> str:
        return self.headers["X-Require2FA-Delivery"]


@dataclass
class Answer:
    status: int = 200
    text: str = "ok"
    headers: dict[str, str] = field(default_factory=dict)
    pause: float = 0.0


class Receiver:
    def __init__(self) -> None:
        self.port = _free_port()
        self.requests: list[Received] = []
        self.answers: deque[Answer] = deque()  # answered in turn, then `default`
        self.default = Answer()
        self.arrived = asyncio.Condition()
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        async with self.arrived:
            self.requests.append(Received(request.path, dict(request.headers), body))
            self.arrived.notify_all()
        answer = self.answers.popleft() if self.answers else self.default
        if answer.pause:
            await asyncio.sleep(answer.pause)
        return web.Response(status=answer.status, text=answer.text, headers=answer.headers)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.5)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def wait_for(self, count: int, limit: float = 30.0) -> None:
        async with self.arrived:
            await asyncio.wait_for(
                self.arrived.wait_for(lambda: len(self.requests) >= count), limit
            )

    def by_delivery(self) -> Counter[str]:
        return Counter(r.delivery for r in self.requests)

    def events(self) -> list[Any]:
        return [r.headers["X-Require2FA-Event"] for r in self.requests]
