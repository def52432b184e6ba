"""Sending one claimed batch of outbox rows and recording every row's outcome."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta

import aiosmtplib
import asyncpg
import redis
import structlog
from asyncpg.pool import PoolConnectionProxy

from db import outbox
from jobs.mail.rate import SendRate
from jobs.mail.smtp import TRANSIENT, Smtp, describe
from require2fa.email_classes import BULK_LANE
from require2fa.emails import Message, build_message, render
from require2fa.settings import Settings

log = structlog.get_logger(__name__)

RENDER_AHEAD = 8  # messages rendered ahead of the senders
RETRY_BASE_SECONDS = 10.0
RETRY_MAX_SECONDS = 3600.0
RECORD_PAUSE = 1.0  # seconds between attempts at recording outcomes while the database is away
# The database cannot be reached right now (a restart, a network cut).
DATABASE_DOWN = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.OperatorInterventionError,  # shutting down, starting up
    asyncpg.InterfaceError,
)


@dataclass
class Report:
    sent: int = 0
    retried: int = 0
    failed: int = 0
    busy: bool = False  # every dispatcher slot was taken: those dispatches will send the rows
    more: bool = False  # the time budget ran out with rows still due
    wake_at: datetime | None = None  # when the next row not due yet becomes due


def retry_delay(attempts: int) -> float:
    """Seconds before attempt `attempts + 1`: 10 s, 20 s, 40 s … up to an hour, with jitter."""
    delay = min(RETRY_BASE_SECONDS * 2 ** max(0, attempts - 1), RETRY_MAX_SECONDS)
    return delay * random.uniform(0.8, 1.2)


class Delivery:
    """Sends claimed batches and records every row's outcome.

    One task renders the messages a few steps ahead; one sender task per SMTP connection takes
    them in turn, so the server works on one connection while we render or talk on another.

    A row is marked sent as soon as the server has accepted its message: one marking at a time,
    in the background, of every row accepted since the last one began (`_mark`), while the
    connections go on with their next message. A connection's next message is not handed to
    the server before its previous one is marked, so a crash at any point leaves at most one
    accepted message unmarked per open connection, and only those go out a second time (with
    the same Message-ID).
    The claims on the batch last `lease`; `renew` (the dispatch's heartbeat) extends them while
    this process lives, and a row is sent only while its claim is known to hold.
    """

    def __init__(
        self, pool: asyncpg.Pool, settings: Settings, rate: SendRate, report: Report
    ) -> None:
        self.pool = pool
        self.settings = settings
        self.rate = rate
        self.report = report
        self.rows: list[asyncpg.Record] = []  # the batch being sent
        self.held: set[int] = set()
        self.claim_ends = 0.0

    async def run(self, rows: list[asyncpg.Record], smtps: list[Smtp], lease: timedelta) -> None:
        self.sent: list[int] = []
        self.retry: list[tuple[int, int, float, str]] = []
        self.failed: list[tuple[int, int, str]] = []
        self.unavailable: BaseException | None = None  # the server cannot be reached now
        self.marking: asyncio.Task[None] | None = None  # the marking in flight
        self.next_mark: asyncio.Task[None] | None = None  # the one after it, for rows sent since
        self.marks: list[asyncio.Task[None]] = []  # this batch's, awaited before recording
        self.marker: PoolConnectionProxy | None = None  # the connection they mark on
        self.left = len(rows)
        self.left_in = Counter(row["lane"] for row in rows)  # rows not taken yet, by lane
        self.rows = rows
        self.held = {row["id"] for row in rows}  # rows whose claim is known to hold
        self.prepared: asyncio.Queue[tuple[asyncpg.Record, Message | Exception] | None]
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
            # Their failures put their rows back in `sent`, which `_record` marks again.
            await asyncio.gather(*self.marks, return_exceptions=True)
            self.marks = []
            # Recorded even when a sender failed: rows sent must not go out again.
            try:
                await self._record()
            finally:
                await self._release_marker()
            self.rows = []

    async def renew(self, lease: timedelta) -> None:
        """Extends the claims on the rows of the batch being sent that are not recorded yet."""
        rows = self.rows
        pending = [(row["id"], row["attempts"]) for row in rows if row["id"] in self.held]
        if not pending:
            return
        started = asyncio.get_running_loop().time()
        async with self.pool.acquire() as conn:
            renewed = await outbox.renew_claims(conn, pending, lease=lease)
        if rows is not self.rows:
            return  # that batch ended meanwhile
        # Rows recorded meanwhile are not `sending` any more; the others lapsed: not ours.
        self.held &= set(renewed)
        self.claim_ends = started + lease.total_seconds() * 0.8

    async def _record(self) -> None:
        # PostgreSQL may be restarting: the outcomes are tried again until the claims would
        # end (rows accepted by the server and not marked by then go out a second time).
        loop = asyncio.get_running_loop()
        while True:
            try:
                await self._flush_sent()
                async with self.pool.acquire() as conn:
                    self.report.retried += await outbox.mark_retry(conn, self.retry)
                    self.retry = []
                    self.report.failed += await outbox.mark_failed(conn, self.failed)
                break
            except DATABASE_DOWN as err:
                if loop.time() + RECORD_PAUSE > self.claim_ends:
                    log.error("email.record_failed", sent=len(self.sent), error=str(err))
                    return  # the claims lapse and the rows are due again
                log.warning("email.record_retried", sent=len(self.sent), error=str(err))
                await asyncio.sleep(RECORD_PAUSE)
            except Exception:  # a bug: the claims lapse and the rows are due again
                log.exception("email.record_failed", sent=len(self.sent), retry=len(self.retry))
                return
        for row_id, _attempts, error in self.failed:
            log.warning("email.failed", outbox_id=row_id, error=error)

    async def _prepare(self, rows: list[asyncpg.Record], senders: int) -> None:
        for row in rows:
            try:
                item: Message | Exception = build_message(
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
        marked: asyncio.Task[None] | None = None  # the marking of this connection's last email
        while (item := await self.prepared.get()) is not None:
            row, message = item
            self.left -= 1
            self.left_in[row["lane"]] -= 1
            if isinstance(message, Exception):
                self._fail(row, f"cannot build the message: {describe(message)}")
                continue
            if self.unavailable is not None:
                self._later(row, self.unavailable)
                continue
            if asyncio.get_running_loop().time() > self.claim_ends or row["id"] not in self.held:
                self.retry.append((row["id"], row["attempts"], 0.0, "claim ran out before sending"))
                continue
            try:
                lane = row["lane"]
                await self.rate.take(self.left_in[lane] + 1, bulk=lane == BULK_LANE)
            except (redis.RedisError, OSError) as err:
                # Redis is away: nothing more is sent now (the rate would not hold), and the
                # other senders finish their message rather than being cut off in the middle.
                log.warning("email.rate_unavailable", error=describe(err), rows=self.left + 1)
                self.unavailable = err
                self._later(row, err)
                continue
            try:
                await smtp.connect()
            except TRANSIENT as err:
                # Nothing more of this batch goes out now: every row left waits for its retry.
                log.warning("email.smtp_unavailable", error=describe(err), rows=self.left + 1)
                self.unavailable = err
                self._later(row, err)
                await smtp.drop()
                continue
            if await self._send_one(smtp, row, message, marked):
                marked = self._mark()

    async def _send_one(
        self,
        smtp: Smtp,
        row: asyncpg.Record,
        message: Message,
        marked: asyncio.Task[None] | None,
    ) -> bool:
        """Sends one message on the open connection once `marked` (the marking of the previous
        one) is done, and records what became of it; whether the server accepted it."""

        async def ready() -> bool:
            if marked is None:
                return True
            try:
                await marked
            except DATABASE_DOWN as err:
                # Sending stops (the rest waits for a retry); the marks are tried again when
                # the batch is recorded. The other connections finish their message.
                log.warning("email.mark_failed", error=str(err))
                self.unavailable = err
                return False
            return True

        try:
            if not await smtp.send(message, ready=ready):
                assert self.unavailable is not None
                self._later(row, self.unavailable)
                return False
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
        except TRANSIENT as err:
            # The connection broke or timed out: whether the server kept the message is
            # unknown; it is sent again later with the same Message-ID.
            self._later(row, err)
            await smtp.drop()
        else:
            self.sent.append(row["id"])
            return True
        return False

    def _mark(self) -> asyncio.Task[None]:
        """The marking that will take the rows in `sent` now: the next one to start. One runs at
        a time, so that the rows accepted while one is in flight go in one statement after it."""
        if self.next_mark is None:
            self.next_mark = asyncio.create_task(self._mark_after(self.marking))
            self.marks.append(self.next_mark)
        return self.next_mark

    async def _mark_after(self, previous: asyncio.Task[None] | None) -> None:
        if previous is not None:
            await asyncio.wait([previous])  # its failure is its waiters'
        self.marking, self.next_mark = self.next_mark, None
        await self._flush_sent()

    async def _flush_sent(self) -> None:
        ids, self.sent = self.sent, []
        if not ids:
            return
        try:
            # One connection for the batch's marks: no acquire and reset round trips per mark.
            if self.marker is None:
                self.marker = await self.pool.acquire()
            marked = await outbox.mark_sent(self.marker, ids)
        except BaseException:
            self.sent.extend(ids)  # tried again when the batch is recorded
            await self._release_marker()  # perhaps broken: the next mark takes another
            raise
        self.report.sent += marked  # added after the await: senders mark at the same time

    async def _release_marker(self) -> None:
        marker, self.marker = self.marker, None
        if marker is not None:
            await self.pool.release(marker)
