"""Posting due webhook deliveries (`dispatch`): claimed a few per webhook at a time under a
lease, each posted in its own task through `jobs.webhook_client` and signed in both forms
(`require2fa.webhook_signatures`), each outcome recorded (delivered, retried with backoff,
failed; a 410 turns the webhook off); and putting back the claims of a dead worker (`sweep`).
The actors are `jobs.webhooks`."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import aiohttp
import asyncpg
import structlog

from db import webhooks as outbox
from jobs import outbox_family
from jobs.webhook_client import CONCURRENCY, blocked, client_session, describe
from require2fa import webhook_signatures, webhooks
from require2fa.settings import Settings

log = structlog.get_logger(__name__)

BATCH = 200  # rows held at once by a dispatch
LEASE = timedelta(minutes=5)  # a claim lapses after this; the sweeper then puts the rows back
BUDGET_SECONDS = 60.0  # one dispatch message sends for about this long, then sends itself again
FLUSH_EVERY = 100  # outcomes are recorded in groups at most this size (and before each claim)
POLL_SECONDS = 0.5  # while requests are in flight, claims again at least this often
KEEP_BYTES = 1024  # of each answer, kept as lastResponse
RETRY_BASE_SECONDS = 10.0
RETRY_MAX_SECONDS = 3600.0


def retry_delay(attempts: int) -> float:
    """Seconds before attempt `attempts + 1`: 10 s, 20 s, 40 s … up to an hour, with jitter."""
    delay = min(RETRY_BASE_SECONDS * 2 ** max(0, attempts - 1), RETRY_MAX_SECONDS)
    return delay * random.uniform(0.8, 1.2)


# --- Dispatch -------------------------------------------------------------------------------


@dataclass
class Report:
    delivered: int = 0
    retried: int = 0
    failed: int = 0
    more: bool = False  # the time budget ran out with rows still due
    wake_at: datetime | None = None  # when the next row not due yet becomes due


@dataclass
class _Outcomes:
    delivered: list[outbox.Answer] = field(default_factory=list)
    retry: list[tuple[int, int, int | None, str | None, float, str]] = field(default_factory=list)
    failed: list[tuple[int, int, int | None, str | None, str]] = field(default_factory=list)
    gone: set[int] = field(default_factory=set)  # webhooks whose receiver answered 410

    def __len__(self) -> int:
        return len(self.delivered) + len(self.retry) + len(self.failed)


class _Dispatch:
    """One dispatch: claims a few rows per webhook at a time (`db.webhooks.claim` holds at most
    `concurrency` per webhook, in flight anywhere), posts each in a task of its own, and claims
    again as soon as one ends (or every `POLL_SECONDS`, for rows that came due meanwhile), so
    that a receiver that hangs holds its own rows only."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        settings: Settings,
        session: aiohttp.ClientSession,
        *,
        batch: int,
        concurrency: int,
        lease: timedelta,
        deadline: float,
    ) -> None:
        self.pool = pool
        self.settings = settings
        self.session = session
        self.batch = batch
        self.concurrency = concurrency
        self.lease = lease
        self.deadline = deadline
        self.report = Report()
        self.outcomes = _Outcomes()
        self.flushing = asyncio.Lock()
        self.secrets: dict[int, list[str] | None] = {}
        self.urls: dict[int, str | webhooks.Invalid] = {}
        # Webhooks that could not be reached in this dispatch: their other rows wait for a retry.
        self.down: dict[int, str] = {}
        self.turned_off: set[int] = set()  # answered 410 in this dispatch
        self.held = 0  # rows claimed whose outcome is not decided yet
        self.ended = asyncio.Event()  # a row's outcome was decided
        self.tasks: set[asyncio.Task[None]] = set()

    async def run(self) -> None:
        try:
            await self._claimer()
        finally:
            results = await asyncio.gather(*self.tasks, return_exceptions=True)
            await self._flush()
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def _claimer(self) -> None:
        loop = asyncio.get_running_loop()
        while loop.time() < self.deadline:
            self.ended.clear()
            idle = not self.held  # then every outcome so far is in this flush
            await self._flush()  # recorded rows no longer count as held by their webhook
            rows: list[asyncpg.Record] = []
            if self.held < self.batch:
                async with self.pool.acquire() as conn:
                    rows = await outbox.claim(
                        conn,
                        limit=self.batch - self.held,
                        lease=self.lease,
                        per_webhook=self.concurrency,
                    )
            if not rows and idle:
                return
            # Past this, another dispatcher may claim the row: unsent by then, it goes back.
            claim_ends = loop.time() + self.lease.total_seconds() * 0.8
            for row in rows:
                self.held += 1
                task = asyncio.create_task(self._send(row, claim_ends))
                self.tasks.add(task)
                task.add_done_callback(self.tasks.discard)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(POLL_SECONDS):
                    await self.ended.wait()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        async with self.pool.acquire() as conn:
            self.report.more = await outbox.any_due(conn)

    async def _send(self, row: asyncpg.Record, claim_ends: float) -> None:
        try:
            if asyncio.get_running_loop().time() > claim_ends:
                self._retry(row, None, None, 0.0, "claim ran out before sending")
            else:
                await self._deliver(row)
        except Exception as err:  # a bug must not stop the other rows: retried later
            log.exception("webhooks.delivery_error", delivery_id=row["id"])
            self._retry(row, None, None, None, describe(err))
        finally:
            self.held -= 1
            self.ended.set()
        if len(self.outcomes) >= FLUSH_EVERY and not self.flushing.locked():
            await self._flush()

    def _url(self, row: asyncpg.Record) -> str | webhooks.Invalid:
        """The webhook's URL if the rules (today's: https outside development) allow it."""
        webhook_id = row["webhook_id"]
        if webhook_id not in self.urls:
            try:
                self.urls[webhook_id] = webhooks.check_url(row["url"], self.settings)
            except webhooks.Invalid as err:
                self.urls[webhook_id] = err
        return self.urls[webhook_id]

    def _secrets(self, row: asyncpg.Record) -> list[str] | None:
        """The secrets that sign the row: the current one, then the one a rotation replaced
        while it still signs; None when the current one cannot be read."""
        webhook_id = row["webhook_id"]
        if webhook_id not in self.secrets:
            key = self.settings.secret_key
            current = webhooks.decrypt_secret(row["secret_encrypted"], key)
            previous = None
            if row["previous_signs"] and row["previous_secret_encrypted"] is not None:
                previous = webhooks.decrypt_secret(row["previous_secret_encrypted"], key)
            self.secrets[webhook_id] = (
                None if current is None else [current, *([previous] if previous else [])]
            )
        return self.secrets[webhook_id]

    def _retry(
        self,
        row: asyncpg.Record,
        status: int | None,
        body: str | None,
        delay: float | None,
        error: str,
    ) -> None:
        wait = retry_delay(row["attempts"]) if delay is None else delay
        self.outcomes.retry.append((row["id"], row["attempts"], status, body, wait, error))

    def _fail(self, row: asyncpg.Record, status: int | None, body: str | None, error: str) -> None:
        self.outcomes.failed.append((row["id"], row["attempts"], status, body, error))

    def _ready(self, row: asyncpg.Record) -> tuple[str, list[str], bytes] | None:
        """The URL, secret and body to post, or None when the row's outcome is already decided
        (recorded here): a refused URL, a secret we cannot read, a receiver down, a body too big."""
        url = self._url(row)
        if isinstance(url, webhooks.Invalid):
            self._fail(row, None, None, f"refused: {url}")
            return None
        signing = self._secrets(row)
        if signing is None:
            self._fail(row, None, None, "the secret cannot be decrypted (SECRET_KEY changed)")
            return None
        if row["webhook_id"] in self.turned_off:
            self._fail(row, None, None, webhooks.DISABLED_ERROR)
            return None
        if row["webhook_id"] in self.down:
            self._retry(row, None, None, None, self.down[row["webhook_id"]])
            return None
        payload = webhooks.body(row)
        if len(payload) > webhooks.MAX_BODY:
            self._fail(row, None, None, f"body of {len(payload)} bytes is over the limit")
            return None
        return url, signing, payload

    async def _deliver(self, row: asyncpg.Record) -> None:
        ready = self._ready(row)
        if ready is None:
            return
        url, signing, payload = ready
        headers = webhook_signatures.headers(
            delivery_id=str(row["id"]),
            event=row["event"],
            timestamp=int(time.time()),
            body=payload,
            signing=signing,
        )
        try:
            async with self.session.post(
                url, data=payload, headers=headers, allow_redirects=False
            ) as response:
                status = response.status
                first = await _first_bytes(response)
                retry_after = response.headers.get("Retry-After", "")
        except aiohttp.ClientConnectorError as err:
            if blocked(err):
                self._fail(row, None, None, f"refused: {describe(err.os_error)}")
                return
            self.down[row["webhook_id"]] = describe(err)
            self._retry(row, None, None, None, describe(err))
            return
        except (TimeoutError, aiohttp.ServerTimeoutError):
            error = f"no answer within {self.session.timeout.total:g} s"
            self.down[row["webhook_id"]] = error
            self._retry(row, None, None, None, error)
            return
        except (aiohttp.ClientError, OSError) as err:
            if blocked(err):
                self._fail(row, None, None, f"refused: {describe(err)}")
                return
            self._retry(row, None, None, None, describe(err))
            return
        self._answered(row, status, first, retry_after)

    def _answered(self, row: asyncpg.Record, status: int, first: str, retry_after: str) -> None:
        if 200 <= status < 300:
            self.outcomes.delivered.append((row["id"], row["attempts"], status, first))
        elif status == webhooks.GONE:  # the receiver says it is gone for good: turned off
            self.turned_off.add(row["webhook_id"])
            self.outcomes.gone.add(row["webhook_id"])
            self._fail(row, status, first, webhooks.DISABLED_ERROR)
        elif status in (408, 429) or status >= 500:
            delay = None
            if retry_after.isdigit():  # the receiver asks for a pause; within our bounds
                delay = min(max(float(retry_after), retry_delay(row["attempts"])), 3600.0)
            self._retry(row, status, first, delay, f"HTTP {status}")
        elif 300 <= status < 400:
            self._fail(row, status, first, f"HTTP {status}: redirects are not followed")
        else:
            self._fail(row, status, first, f"HTTP {status}")

    async def _flush(self) -> None:
        async with self.flushing:
            done, self.outcomes = self.outcomes, _Outcomes()
            if not len(done):
                return
            try:
                async with self.pool.acquire() as conn, conn.transaction():
                    delivered = await outbox.mark_delivered(conn, done.delivered)
                    retried = await outbox.mark_retry(conn, done.retry)
                    failed = await outbox.mark_failed(conn, done.failed)
                    if done.gone:
                        await webhooks.disable_gone(conn, sorted(done.gone))
                self.report.delivered += delivered
                self.report.retried += retried
                self.report.failed += failed
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                # The lease runs out and the sweeper puts the rows back: sent again, same ids.
                log.exception("webhooks.record_failed", outcomes=len(done))
                return
            for row_id, _attempts, status, _body, error in done.failed:
                log.warning("webhooks.failed", delivery_id=row_id, status=status, error=error)


async def _first_bytes(response: aiohttp.ClientResponse) -> str:
    """Up to KEEP_BYTES of the answer; the rest is not read (the connection is then closed
    rather than reused)."""
    chunks: list[bytes] = []
    size = 0
    while size < KEEP_BYTES:
        chunk = await response.content.read(KEEP_BYTES - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks).decode("utf-8", "replace").replace("\x00", "")


async def dispatch(
    pool: asyncpg.Pool,
    settings: Settings,
    *,
    budget: float = BUDGET_SECONDS,
    batch: int = BATCH,
    concurrency: int = CONCURRENCY,
    lease: timedelta = LEASE,
    session: aiohttp.ClientSession | None = None,
) -> Report:
    """Posts due deliveries until none is due or `budget` seconds have passed, at most
    `concurrency` at once per webhook; writes each row's outcome (delivered / queued for a
    retry / failed, with the answer's status and first bytes or the error) and turns off the
    webhooks whose receiver answered 410 (`webhooks.disable_gone`)."""
    loop = asyncio.get_running_loop()
    own = session is None
    http = session or client_session(settings)
    work = _Dispatch(
        pool,
        settings,
        http,
        batch=batch,
        concurrency=concurrency,
        lease=lease,
        deadline=loop.time() + budget,
    )
    try:
        await work.run()
    finally:
        if own:
            await http.close()
    report = work.report
    if not report.more:
        async with pool.acquire() as conn:
            report.wake_at = await outbox.next_due_at(conn)
    return report


async def sweep(pool: asyncpg.Pool) -> tuple[int, bool]:
    """Puts back rows whose claim lapsed (their worker died); returns (put back, any due)."""
    return await outbox_family.sweep(pool, outbox, "webhooks.claims_lapsed")
