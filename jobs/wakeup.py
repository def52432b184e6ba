"""Wake-ups after commit: the one door through which a committed change sends its messages.

Producers only write rows. The database announces each commit that wrote some (`pg_notify`,
delivered when the transaction commits and never for a rolled-back one; migrations 0160 and
0170), and this middleware, in each worker process, listens on one connection to the channels
of the queues that process consumes and sends the message each channel asks for, by actor name
(it imports no actor module):

| channel              | written by                              | sends                     |
|----------------------|-----------------------------------------|---------------------------|
| `email_outbox`       | any insert into the email outbox        | `email.dispatch`          |
| `webhook_deliveries` | the audit trigger writing deliveries    | `webhooks.dispatch`       |
| `enforcement_runs`   | a run written or turned `queued`        | `enforcement.coordinate`  |

A dispatch is sent at most once per `DEBOUNCE` seconds per process while notifications come
in; a second dispatch finds the first one's work done or under way. A run's coordinator is
claimed first (`db.planning.claim_coordinators`), so that of the processes hearing the same
notification one sends it. When the connection is (re)opened, every channel is looked at once,
for the notifications sent while nobody listened; the sweepers that the clock sends every
minute find whatever is left anyway (a claim whose message was lost included).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import asyncpg
import dramatiq
import structlog
from dramatiq.asyncio import get_event_loop_thread
from typing_extensions import override

from db import planning
from db.pool import connect
from jobs import resources

log = structlog.get_logger(__name__)

DEBOUNCE = 0.5  # seconds between two rounds of messages sent by one listener
KEEPALIVE = 30.0  # seconds between two checks that the listening connection is alive
RECONNECT = 5.0


@dataclass(frozen=True)
class Channel:
    """A notification channel, the queue whose workers listen to it and the actor it sends:
    once per round, or once per id that `claim` returns (the id as its one argument)."""

    name: str
    queue: str
    actor: str
    claim: Callable[[asyncpg.Connection], Awaitable[list[int]]] | None = None


CHANNELS = (
    Channel("email_outbox", "email", "email.dispatch"),
    Channel("webhook_deliveries", "webhooks", "webhooks.dispatch"),
    Channel(
        "enforcement_runs", "enforcement", "enforcement.coordinate", planning.claim_coordinators
    ),
)


def channels_for(queues: set[str] | None) -> list[Channel]:
    """The channels of the queues a worker consumes (every one when it consumes every queue)."""
    return [c for c in CHANNELS if not queues or c.queue in queues]


class Wakeup(dramatiq.Middleware):
    def __init__(self, channels: Sequence[Channel] = CHANNELS) -> None:
        self._channels = tuple(channels)
        # One listener per worker (a `dramatiq jobs` process has one; tests start several).
        self._listeners: dict[int, tuple[Future[Any], asyncio.Event]] = {}

    def after_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        queues = worker.consumer_whitelist
        channels = [c for c in channels_for(queues) if c in self._channels]
        loop_thread = get_event_loop_thread()
        if not channels or loop_thread is None:
            return
        res = resources.Resources.current
        if res is None or not res.settings.database_url:
            return
        dsn = res.settings.database_url

        async def stop_event() -> asyncio.Event:
            return asyncio.Event()

        stop = loop_thread.run_coroutine(stop_event())
        future = asyncio.run_coroutine_threadsafe(
            _listen(broker, dsn, channels, stop), loop_thread.loop
        )
        self._listeners[id(worker)] = (future, stop)

    @override
    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        listener = self._listeners.pop(id(worker), None)
        loop_thread = get_event_loop_thread()
        if listener is None or loop_thread is None:
            return
        future, stop = listener
        loop_thread.loop.call_soon_threadsafe(stop.set)
        with contextlib.suppress(Exception):
            future.result(timeout=10)


async def _listen(
    broker: dramatiq.Broker, dsn: str, channels: list[Channel], stop: asyncio.Event
) -> None:
    """Listens until `stop`, reconnecting after a lost connection."""
    while not stop.is_set():
        conn: asyncpg.Connection | None = None
        try:
            conn = await connect(dsn)
            notified = asyncio.Event()
            heard: set[str] = set()
            on_notify = _collector(heard, notified)
            for channel in channels:
                await conn.add_listener(channel.name, on_notify)
            heard.update(c.name for c in channels)  # sent while nobody listened: look once
            notified.set()
            while not stop.is_set():
                if not await _wait(notified, stop, KEEPALIVE):
                    await conn.fetchval("select 1")  # the connection is alive
                    continue
                notified.clear()
                due = [c for c in channels if c.name in heard]
                heard.clear()
                for channel in due:
                    await _wake(broker, conn, channel)
                await _wait(stop, stop, DEBOUNCE)
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as err:
            log.warning("wakeup.listen_failed", error=str(err))
            await _wait(stop, stop, RECONNECT)
        except Exception:  # a broker error sending: the sweepers cover it; keep listening
            log.exception("wakeup.send_failed")
            await _wait(stop, stop, RECONNECT)
        finally:
            if conn is not None:
                with contextlib.suppress(Exception):
                    await conn.close(timeout=5)


def _collector(heard: set[str], notified: asyncio.Event) -> Any:
    """The listener callback: remembers which channel spoke and wakes the loop."""

    def on_notify(_conn: object, _pid: int, channel: str, _payload: object) -> None:
        heard.add(channel)
        notified.set()

    return on_notify


async def _wake(broker: dramatiq.Broker, conn: asyncpg.Connection, channel: Channel) -> None:
    """Sends the channel's messages: one, or one per claimed id (none when nothing is claimed)."""
    if channel.claim is None:
        messages = [_message(channel, ())]
    else:
        messages = [_message(channel, (item,)) for item in await channel.claim(conn)]
    if messages:
        await asyncio.to_thread(_send, broker, messages)


def _message(channel: Channel, args: tuple[Any, ...]) -> dramatiq.Message[Any]:
    return dramatiq.Message(
        queue_name=channel.queue, actor_name=channel.actor, args=args, kwargs={}, options={}
    )


def _send(broker: dramatiq.Broker, messages: list[dramatiq.Message[Any]]) -> None:
    for message in messages:
        broker.enqueue(message)


async def _wait(event: asyncio.Event, stop: asyncio.Event, seconds: float) -> bool:
    """Waits up to `seconds` for `event` (or `stop`); True when `event` is set."""
    waiters = {asyncio.ensure_future(event.wait()), asyncio.ensure_future(stop.wait())}
    _done, pending = await asyncio.wait(
        waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED
    )
    for task in pending:
        task.cancel()
    return event.is_set() and not (stop.is_set() and event is not stop)
