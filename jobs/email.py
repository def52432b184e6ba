"""Email delivery from the outbox (queue `email`).

- `email.dispatch` claims due outbox rows in batches, renders them, sends them over a few SMTP
  connections that it keeps open from batch to batch, and marks every row sent, retried later
  (4xx, connection errors, timeouts: exponential backoff, for up to a day) or failed (5xx for
  that message, or it cannot be rendered). It keeps claiming until nothing is due; a second
  delivery of the same message finds nothing due and sends nothing.
- `email.sweep` puts back rows whose claim lapsed (their worker died) and kicks a dispatch when
  rows are due that nobody kicked. The clock runs it every minute.

Producers write outbox rows in their own transaction and `await kick()` once it has committed.

Sending is limited to `EMAIL_RATE` messages a second for all workers together (a token bucket
in Redis), and at most `DISPATCHERS` dispatches send at once, so that a big enforcement keeps
a few worker threads busy rather than all of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import ssl
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.message import EmailMessage

import aiosmtplib
import asyncpg
import dramatiq
import redis
import redis.asyncio as aioredis
import structlog

from db import outbox
from jobs import resources
from require2fa.emails import build_message, render
from require2fa.settings import Settings

log = structlog.get_logger(__name__)

BATCH_MAX = 100  # rows claimed at a time (fewer when EMAIL_RATE is low: about 10 s of sending)
LEASE = timedelta(minutes=5)  # a claim lapses after this; the sweeper then puts the rows back
BUDGET_SECONDS = 60.0  # one dispatch message sends for about this long, then sends itself again
DISPATCHERS = 4  # dispatches that may send at the same time, across every worker
SLOT_TTL_MS = 120_000  # a dead dispatcher's slot frees itself after this
CONNECTIONS = 4  # SMTP connections one dispatch sends over at once
RENDER_AHEAD = 8  # messages rendered ahead of the senders
FLUSH_EVERY = 20  # sent rows are marked in groups this size: a crash re-sends at most these
RETRY_BASE_SECONDS = 10.0
RETRY_MAX_SECONDS = 3600.0
SMTP_TIMEOUT = 30.0

# Failures of the connection rather than of one message: the message is retried later.
_TRANSIENT = (aiosmtplib.SMTPException, OSError, asyncio.TimeoutError)

# A token bucket of `rate` tokens a second holding at most `burst`. Takes up to ARGV[3] tokens;
# returns {taken, milliseconds until the next token when fewer than wanted were taken}.
_TAKE = """
local rate, burst, wanted = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1]) or burst
local at = tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - at) * rate / 1000)
local taken = math.min(wanted, math.floor(tokens))
tokens = tokens - taken
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst * 1000 / rate) + 1000)
local wait = 0
if taken < wanted then wait = math.ceil((1 - tokens) * 1000 / rate) end
return {taken, wait}
"""

# Slot keys hold the owner's token; only the owner renews or frees its slot.
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# Records a wake-up at ARGV[1] (ms since the epoch) unless one is already pending at or before
# it; returns 1 when the caller should schedule it.
_WAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local at = tonumber(ARGV[1])
local pending = tonumber(redis.call('GET', KEYS[1]))
if pending and pending > now and pending <= at then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', math.max(1, at - now) + 60000)
return 1
"""


@dataclass
class Report:
    sent: int = 0
    retried: int = 0
    failed: int = 0
    busy: bool = False  # every dispatcher slot was taken: those dispatches will send the rows
    more: bool = False  # the time budget ran out with rows still due
    wake_at: datetime | None = None  # when the next row not due yet becomes due


def batch_size(settings: Settings) -> int:
    return max(1, min(BATCH_MAX, int(settings.email_rate * 10)))


def retry_delay(attempts: int) -> float:
    """Seconds before attempt `attempts + 1`: 10 s, 20 s, 40 s … up to an hour, with jitter."""
    delay = min(RETRY_BASE_SECONDS * 2 ** max(0, attempts - 1), RETRY_MAX_SECONDS)
    return delay * random.uniform(0.8, 1.2)


def describe(err: BaseException) -> str:
    """The server's reply when there is one (`550 No such user`), else the error."""
    if isinstance(err, aiosmtplib.SMTPRecipientsRefused) and err.recipients:
        err = err.recipients[0]
    if isinstance(err, aiosmtplib.SMTPResponseException):
        return f"{err.code} {err.message}"
    return f"{type(err).__name__}: {err}" if str(err) else type(err).__name__


class SendRate:
    """`EMAIL_RATE` sends a second, shared by every worker through one bucket in Redis."""

    def __init__(self, redis: aioredis.Redis, settings: Settings) -> None:
        self.redis = redis
        self.key = f"{settings.redis_namespace}:email:rate"
        self.rate = settings.email_rate
        self.burst = max(1.0, settings.email_rate)  # a second's worth
        self.tokens = 0  # taken from the bucket, not used yet

    async def take(self, upcoming: int) -> None:
        """Waits for one send; takes tokens for up to `upcoming` sends in one round trip."""
        while self.tokens == 0:
            taken, wait_ms = await self.redis.eval(  # type: ignore[misc]
                _TAKE, 1, self.key, self.rate, self.burst, max(1, upcoming)
            )
            self.tokens += int(taken)
            if self.tokens == 0:
                await asyncio.sleep(int(wait_ms) / 1000)
        self.tokens -= 1


class Slots:
    """At most `DISPATCHERS` dispatches send at once; each holds a slot key in Redis."""

    def __init__(self, redis: aioredis.Redis, settings: Settings) -> None:
        self.redis = redis
        self.prefix = f"{settings.redis_namespace}:email:dispatcher"
        self.token = uuid.uuid4().hex
        self.key: str | None = None

    async def acquire(self) -> bool:
        for slot in range(DISPATCHERS):
            key = f"{self.prefix}:{slot}"
            if await self.redis.set(key, self.token, nx=True, px=SLOT_TTL_MS):
                self.key = key
                return True
        return False

    async def renew(self) -> None:
        if self.key is not None:
            await self.redis.eval(_RENEW, 1, self.key, self.token, SLOT_TTL_MS)  # type: ignore[misc]

    async def release(self) -> None:
        if self.key is not None:
            await self.redis.eval(_RELEASE, 1, self.key, self.token)  # type: ignore[misc]
            self.key = None


class Smtp:
    """One SMTP connection (per `SMTP_URL`), opened on first use and reused for many messages."""

    def __init__(self, settings: Settings, tls_context: ssl.SSLContext | None = None) -> None:
        self.target = settings.smtp
        self.tls_context = tls_context
        self.client: aiosmtplib.SMTP | None = None

    async def connect(self) -> None:
        if self.client is not None and self.client.is_connected:
            return
        target = self.target
        client = aiosmtplib.SMTP(
            hostname=target.host,
            port=target.port,
            use_tls=target.use_tls,
            start_tls=target.start_tls and not target.use_tls,
            username=target.username,
            password=target.password,
            timeout=SMTP_TIMEOUT,
            tls_context=self.tls_context,
        )
        await client.connect()  # greeting, EHLO, STARTTLS and AUTH as the URL asks
        self.client = client

    async def send(self, message: EmailMessage) -> None:
        assert self.client is not None
        await self.client.send_message(message)

    async def drop(self) -> None:
        """Forget a connection that failed; the next message opens a new one."""
        if self.client is not None:
            self.client.close()
            self.client = None

    async def close(self) -> None:
        if self.client is not None and self.client.is_connected:
            try:
                await self.client.quit()
            except _TRANSIENT:
                self.client.close()
        self.client = None


async def dispatch(
    pool: asyncpg.Pool,
    redis: aioredis.Redis,
    settings: Settings,
    *,
    budget: float = BUDGET_SECONDS,
    batch: int | None = None,
    connections: int = CONNECTIONS,
    tls_context: ssl.SSLContext | None = None,
    lease: timedelta = LEASE,
) -> Report:
    """Sends due outbox rows until none is due or `budget` seconds have passed.

    Writes each row's outcome (sent / queued for a retry / failed, with the server's reply).
    """
    report = Report()
    slots = Slots(redis, settings)
    if not await slots.acquire():
        report.busy = True
        return report
    loop = asyncio.get_running_loop()
    deadline = loop.time() + budget
    delivery = _Delivery(pool, settings, SendRate(redis, settings), report)
    smtps = [Smtp(settings, tls_context) for _ in range(max(1, connections))]
    try:
        while True:
            async with pool.acquire() as conn:
                rows = await outbox.claim(conn, limit=batch or batch_size(settings), lease=lease)
            if not rows:
                # Free the slot, then look once more: a kick that found every slot taken counts
                # on a dispatcher seeing its rows after letting go.
                await slots.release()
                async with pool.acquire() as conn:
                    due = await outbox.any_due(conn)
                if due and await slots.acquire():
                    continue
                break
            await delivery.run(rows, smtps, lease)
            if delivery.unavailable is not None:
                break  # the server cannot be reached: the rest waits for its retry time
            if loop.time() >= deadline:
                report.more = True
                break
            await slots.renew()
    finally:
        await slots.release()
        for smtp in smtps:
            await smtp.close()
    if not report.more:
        async with pool.acquire() as conn:
            report.wake_at = await outbox.next_due_at(conn)
    return report


class _Delivery:
    """Sends claimed batches and records every row's outcome.

    One task renders the messages a few steps ahead; one sender task per SMTP connection takes
    them in turn, so the server works on one connection while we render or talk on another.
    """

    def __init__(
        self, pool: asyncpg.Pool, settings: Settings, rate: SendRate, report: Report
    ) -> None:
        self.pool = pool
        self.settings = settings
        self.rate = rate
        self.report = report

    async def run(self, rows: list[asyncpg.Record], smtps: list[Smtp], lease: timedelta) -> None:
        self.sent: list[int] = []
        self.retry: list[tuple[int, int, float, str]] = []
        self.failed: list[tuple[int, int, str]] = []
        self.unavailable: BaseException | None = None  # the server cannot be reached now
        self.left = len(rows)
        self.prepared: asyncio.Queue[tuple[asyncpg.Record, EmailMessage | Exception] | None]
        self.prepared = asyncio.Queue(maxsize=RENDER_AHEAD)
        # Past this, another dispatcher may claim these rows: what is not sent by then goes back.
        self.claim_ends = asyncio.get_running_loop().time() + lease.total_seconds() * 0.8
        senders = smtps[: len(rows)]
        renderer = asyncio.create_task(self._prepare(rows, len(senders)))
        try:
            async with asyncio.TaskGroup() as group:  # one sender failing stops the others
                for smtp in senders:
                    group.create_task(self._send(smtp))
        finally:
            renderer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renderer
            # Recorded even when a sender failed: rows sent must not go out again.
            await self._record()

    async def _record(self) -> None:
        try:
            await self._flush_sent()
            async with self.pool.acquire() as conn:
                self.report.retried += await outbox.mark_retry(conn, self.retry)
                self.report.failed += await outbox.mark_failed(conn, self.failed)
        except Exception:  # the lease runs out and the sweeper puts the rows back
            log.exception("email.record_failed", sent=len(self.sent), retry=len(self.retry))
            return
        for row_id, _attempts, error in self.failed:
            log.warning("email.failed", outbox_id=row_id, error=error)

    async def _prepare(self, rows: list[asyncpg.Record], senders: int) -> None:
        for row in rows:
            try:
                item: EmailMessage | Exception = build_message(
                    render(row["template"], row["context"], self.settings),
                    to=row["to_address"],
                    message_id=row["message_id"],
                    settings=self.settings,
                )
            except Exception as err:  # recorded on its row below; retrying would not help
                item = err
            await self.prepared.put((row, item))
            await asyncio.sleep(0)  # lets a sender read its reply before the next render
        for _ in range(senders):
            await self.prepared.put(None)

    def _later(self, row: asyncpg.Record, err: BaseException) -> None:
        delay = retry_delay(row["attempts"])
        self.retry.append((row["id"], row["attempts"], delay, describe(err)))

    def _fail(self, row: asyncpg.Record, error: str) -> None:
        self.failed.append((row["id"], row["attempts"], error))

    async def _send(self, smtp: Smtp) -> None:
        while (item := await self.prepared.get()) is not None:
            row, message = item
            self.left -= 1
            if isinstance(message, Exception):
                self._fail(row, f"cannot build the message: {describe(message)}")
                continue
            if self.unavailable is not None:
                self._later(row, self.unavailable)
                continue
            if asyncio.get_running_loop().time() > self.claim_ends:
                self.retry.append((row["id"], row["attempts"], 0.0, "claim ran out before sending"))
                continue
            await self.rate.take(self.left + 1)
            try:
                await smtp.connect()
            except _TRANSIENT as err:
                # Nothing more of this batch goes out now: every row left waits for its retry.
                log.warning("email.smtp_unavailable", error=describe(err), rows=self.left + 1)
                self.unavailable = err
                self._later(row, err)
                await smtp.drop()
                continue
            try:
                await smtp.send(message)
            except aiosmtplib.SMTPRecipientsRefused as err:
                code = err.recipients[0].code if err.recipients else 0
                if code >= 500:
                    self._fail(row, describe(err))
                else:
                    self._later(row, err)
            except aiosmtplib.SMTPResponseException as err:
                # 5xx to the message itself is final; 4xx, or a refusal of our sender (the
                # same for every message: a setting to fix), is worth trying again.
                if err.code >= 500 and isinstance(err, aiosmtplib.SMTPDataError):
                    self._fail(row, describe(err))
                else:
                    self._later(row, err)
            except (ValueError, aiosmtplib.SMTPNotSupported) as err:
                # An address the server cannot take (non-ASCII without SMTPUTF8): final.
                self._fail(row, f"cannot send: {err}")
            except _TRANSIENT as err:
                # The connection broke or timed out: whether the server kept the message is
                # unknown; it is sent again later with the same Message-ID.
                self._later(row, err)
                await smtp.drop()
            else:
                self.sent.append(row["id"])
                if len(self.sent) >= FLUSH_EVERY:
                    await self._flush_sent()

    async def _flush_sent(self) -> None:
        ids, self.sent = self.sent, []
        if ids:
            self.report.sent += await _mark_sent(self.pool, ids)


async def _mark_sent(pool: asyncpg.Pool, ids: list[int]) -> int:
    if not ids:
        return 0
    async with pool.acquire() as conn:
        return await outbox.mark_sent(conn, ids)


async def sweep(pool: asyncpg.Pool) -> tuple[int, bool]:
    """Puts back rows whose claim lapsed (their worker died); returns (put back, any due)."""
    async with pool.acquire() as conn:
        released = await outbox.release_lapsed(conn)
        due = await outbox.any_due(conn)
    if released:
        log.warning("email.claims_lapsed", rows=released)
    return released, due


async def schedule_wake(redis: aioredis.Redis, settings: Settings, at: datetime) -> bool:
    """Sends a delayed `email.dispatch` for `at` unless one at or before it is pending."""
    at_ms = int(at.timestamp() * 1000)
    key = f"{settings.redis_namespace}:email:wake"
    if not await redis.eval(_WAKE, 1, key, at_ms):  # type: ignore[misc]
        return False
    delay_ms = max(1000, at_ms - int(time.time() * 1000))
    await asyncio.to_thread(dispatch_job.send_with_options, delay=delay_ms)
    return True


# --- Actors ---------------------------------------------------------------------------------


@dramatiq.actor(
    actor_name="email.dispatch",
    queue_name="email",
    # Each row's failures are handled inside; what escapes (the database is down) is retried
    # a few times, and the sweeper covers the rest.
    max_retries=3,
    min_backoff=1_000,
    max_backoff=30_000,
    time_limit=10 * 60 * 1000,
)
async def dispatch_job() -> None:
    """Sends due outbox emails and marks each row sent, retried or failed; sends itself again
    while rows remain, and a delayed copy for the next retry."""
    res = resources.current()
    report = await dispatch(res.pool, res.redis, res.settings)
    if report.sent or report.retried or report.failed:
        log.info(
            "email.dispatched",
            sent=report.sent,
            retried=report.retried,
            failed=report.failed,
            more=report.more,
        )
    if report.more:
        await asyncio.to_thread(dispatch_job.send)
    elif report.wake_at is not None and not report.busy:
        await schedule_wake(res.redis, res.settings, report.wake_at)


@dramatiq.actor(actor_name="email.sweep", queue_name="email", max_retries=0, time_limit=60_000)
async def sweep_job() -> None:
    """Puts back outbox rows a dead worker had claimed; sends `email.dispatch` if rows are due,
    else a delayed one for the next retry."""
    res = resources.current()
    _released, due = await sweep(res.pool)
    if due:
        await asyncio.to_thread(dispatch_job.send)
        return
    async with res.pool.acquire() as conn:
        wake_at = await outbox.next_due_at(conn)
    if wake_at is not None:
        await schedule_wake(res.redis, res.settings, wake_at)


async def kick() -> None:
    """Asks for delivery of outbox rows; call it after the transaction that wrote them commits.

    The rows are committed already: if Redis cannot take the message now, `email.sweep` finds
    them within a minute, so a failure here is logged and not raised into the caller."""
    try:
        await asyncio.to_thread(dispatch_job.send)
    except (redis.RedisError, OSError) as err:
        log.warning("email.kick_failed", error=str(err))
