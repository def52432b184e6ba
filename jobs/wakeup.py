"""Wakes the webhook dispatchers when deliveries are written.

Deliveries are written by a trigger on audit_log (migration 0160) in whatever transaction
writes the audit entry, so no Python producer is there to send a message after the commit.
The trigger calls `pg_notify('webhook_deliveries')` instead, which PostgreSQL delivers when the
transaction commits (never for a rolled-back one). This middleware keeps one listening
connection per worker process that consumes the `webhooks` queue and sends `webhooks.dispatch`
(by name: it imports no actor module) at most every `DEBOUNCE` seconds while notifications
come in. A lost connection is reopened, with one dispatch sent for whatever it missed; and
`webhooks.sweep`, which the clock sends every minute, finds anything left anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
from concurrent.futures import Future
from typing import Any

import asyncpg
import dramatiq
import structlog
from dramatiq.asyncio import get_event_loop_thread

from db.pool import connect
from jobs import resources

log = structlog.get_logger(__name__)

CHANNEL = "webhook_deliveries"
QUEUE = "webhooks"
ACTOR = "webhooks.dispatch"
DEBOUNCE = 0.5  # seconds between two dispatches sent by one listener
KEEPALIVE = 30.0  # seconds between two checks that the listening connection is alive
RECONNECT = 5.0


class WebhookWakeup(dramatiq.Middleware):
    def __init__(self) -> None:
        self._future: Future[Any] | None = None
        self._stop: asyncio.Event | None = None

    def after_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        queues = worker.consumer_whitelist
        loop_thread = get_event_loop_thread()
        if (queues and QUEUE not in queues) or loop_thread is None:
            return
        res = resources.Resources.current
        if res is None or not res.settings.database_url:
            return
        dsn = res.settings.database_url

        async def start() -> None:
            self._stop = asyncio.Event()

        loop_thread.run_coroutine(start())
        self._future = asyncio.run_coroutine_threadsafe(self._listen(broker, dsn), loop_thread.loop)

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        loop_thread = get_event_loop_thread()
        if self._future is None or loop_thread is None or self._stop is None:
            return
        loop_thread.loop.call_soon_threadsafe(self._stop.set)
        with contextlib.suppress(Exception):
            self._future.result(timeout=10)
        self._future = None

    async def _listen(self, broker: dramatiq.Broker, dsn: str) -> None:
        assert self._stop is not None
        stop = self._stop
        while not stop.is_set():
            conn: asyncpg.Connection | None = None
            try:
                conn = await connect(dsn)
                notified = asyncio.Event()
                await conn.add_listener(CHANNEL, _setter(notified))
                notified.set()  # notifications sent while nobody listened: look once
                while not stop.is_set():
                    if not await _wait(notified, stop, KEEPALIVE):
                        await conn.fetchval("select 1")  # the connection is alive
                        continue
                    notified.clear()
                    await asyncio.to_thread(_send, broker)
                    await _wait(stop, stop, DEBOUNCE)
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as err:
                log.warning("webhooks.listen_failed", error=str(err))
                await _wait(stop, stop, RECONNECT)
            except Exception:  # a Redis error sending: the sweeper covers it; keep listening
                log.exception("webhooks.wakeup_failed")
                await _wait(stop, stop, RECONNECT)
            finally:
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await conn.close(timeout=5)


async def _wait(event: asyncio.Event, stop: asyncio.Event, seconds: float) -> bool:
    """Waits up to `seconds` for `event` (or `stop`); True when `event` is set."""
    waiters = {asyncio.ensure_future(event.wait()), asyncio.ensure_future(stop.wait())}
    _done, pending = await asyncio.wait(
        waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED
    )
    for task in pending:
        task.cancel()
    return event.is_set() and not (stop.is_set() and event is not stop)


def _setter(event: asyncio.Event) -> Any:
    def on_notify(*_: object) -> None:
        event.set()

    return on_notify


def _send(broker: dramatiq.Broker) -> None:
    message: dramatiq.Message[Any] = dramatiq.Message(
        queue_name=QUEUE, actor_name=ACTOR, args=(), kwargs={}, options={}
    )
    broker.enqueue(message)
