"""Slowloris (issue 25, point 10): connections that never finish their request head are closed
within the head timeout, however slowly their bytes trickle, while a normal request on the same
server is answered meanwhile."""

from __future__ import annotations

import asyncio
import time

from aiohttp import web

from api.app import HEAD_TIMEOUT_SECONDS, create_app, server_options

HEAD_TIMEOUT = 2.0  # the bound under test, shorter than HEAD_TIMEOUT_SECONDS to keep it quick
PARTIAL = 100


async def _closed_after(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> float:
    """Trickles a header byte a second until the server closes the connection; how long it took."""
    started = time.monotonic()
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: testserver\r\nX-Slow: ")
    while time.monotonic() - started < HEAD_TIMEOUT * 5:
        try:
            writer.write(b"a")
            await writer.drain()
            data = await asyncio.wait_for(reader.read(1024), timeout=1)
        except TimeoutError:
            continue
        except ConnectionError:
            break
        if not data:  # closed by the server
            break
    writer.close()
    return time.monotonic() - started


async def test_partial_heads_are_closed_within_the_bound(settings, pool) -> None:
    assert HEAD_TIMEOUT_SECONDS <= 30
    runner = web.AppRunner(
        create_app(settings), access_log=None, **server_options(head_timeout=HEAD_TIMEOUT)
    )
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        connections = [await asyncio.open_connection("127.0.0.1", port) for _ in range(PARTIAL)]
        waits = asyncio.gather(*(_closed_after(r, w) for r, w in connections))
        # A whole request is answered while the partial heads are held.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: testserver\r\nConnection: close\r\n\r\n")
        assert (await asyncio.wait_for(reader.read(64), timeout=5)).startswith(b"HTTP/1.1 200")
        writer.close()
        durations = await waits
    finally:
        await runner.cleanup()
    assert max(durations) < HEAD_TIMEOUT + 2, max(durations)
