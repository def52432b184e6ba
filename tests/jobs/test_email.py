"""Outbox delivery against real SMTP servers (aiosmtpd), PostgreSQL and Redis.

The first tests await `jobs.email.dispatch` directly; the end-to-end ones at the bottom run real
Dramatiq worker threads on the Redis broker and talk to them only through messages.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import ssl
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from urllib.parse import quote

import asyncpg
import dramatiq
import pytest
import redis as sync_redis
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from db import outbox
from jobs import email as email_jobs
from jobs.mail import rate as mail_rate
from jobs.mail import slots as mail_slots
from tests.conftest import NAMESPACE, Mailbox, _free_port

BASE = "http://testserver"


def _context(template: str, n: int) -> dict[str, str]:
    accept = f"{BASE}/accept/{n}/token-{n}/"
    security = f"{BASE}/account/security/"
    return {
        "invite": {"org_name": "Acme", "org_slug": "acme", "inviter": "Ada", "accept_url": accept},
        "removed_for_2fa": {
            "org_name": "Acme",
            "org_slug": "acme",
            "member_email": f"user{n}@example.com",
            "accept_url": accept,
            "reinstate_by": "2026-06-30T10:00:00+00:00",
        },
        "security_notice": {
            "action": "added",
            "factor": "totp",
            "factor_name": "Phone",
            "security_url": security,
        },
    }[template]


async def queue(
    pool: asyncpg.Pool,
    count: int,
    *,
    template: str = "invite",
    prefix: str = "user",
    enforcement_id: int | None = None,
) -> list[str]:
    """Writes `count` outbox rows (one transaction); returns their addresses."""
    addresses = [f"{prefix}{n}@example.com" for n in range(count)]
    async with pool.acquire() as conn, conn.transaction():
        for n, address in enumerate(addresses):
            await outbox.enqueue(
                conn,
                template=template,
                to=address,
                context=_context(template, n),
                dedupe_key=f"test:{template}:{prefix}:{n}",
                member_id=n,
                enforcement_id=enforcement_id,
            )
    return addresses


async def rows(pool: asyncpg.Pool) -> list[asyncpg.Record]:
    async with pool.acquire() as conn:
        return await conn.fetch("select * from email_outbox order by id")


async def time_passes(pool: asyncpg.Pool) -> None:
    """Every retry comes due now, as if its backoff had elapsed."""
    async with pool.acquire() as conn:
        await conn.execute(
            "update email_outbox set next_attempt_at = now() where status = 'queued'"
        )


def assert_each_once(mailbox: Mailbox, addresses: list[str]) -> None:
    received = Counter(str(m["To"]) for m in mailbox.messages)
    assert received == Counter(addresses)


def start_server(handler: object, port: int | None = None, **kwargs: object) -> Controller:
    controller = Controller(
        handler,
        hostname="127.0.0.1",
        port=port or _free_port(),
        server_hostname="test-smtp",
        **kwargs,
    )
    controller.start()
    return controller


# --- Delivery -----------------------------------------------------------------------------


async def test_each_email_arrives_once_with_both_parts(pool, redis, settings, mailbox) -> None:
    invited = await queue(pool, 3, template="invite", prefix="invited")
    removed = await queue(pool, 2, template="removed_for_2fa", prefix="removed")

    report = await email_jobs.dispatch(pool, redis, settings)

    assert (report.sent, report.retried, report.failed) == (5, 0, 0)
    assert_each_once(mailbox, invited + removed)
    by_address = {row["to_address"]: row for row in await rows(pool)}
    for message in mailbox.messages:
        row = by_address[str(message["To"])]
        n = row["member_id"]
        link = f"{BASE}/accept/{n}/token-{n}/"
        assert message["Message-ID"] == row["message_id"]
        assert message["From"] == settings.email_from
        text = message.get_body(("plain",))
        html = message.get_body(("html",))
        assert text is not None and link in text.get_content()
        assert html is not None and f'href="{link}"' in html.get_content()
        if row["template"] == "removed_for_2fa":
            assert "Mandatory: Enable Two-Factor Authentication" in message["Subject"]
            assert "Enable Two-Factor Authentication</a>" in html.get_content()
        assert row["status"] == "sent"
        assert row["sent_at"] is not None
        assert row["attempts"] == 1

    # A second delivery of the dispatch message finds nothing due.
    again = await email_jobs.dispatch(pool, redis, settings)
    assert (again.sent, again.retried, again.failed) == (0, 0, 0)
    assert len(mailbox.messages) == 5


async def test_rows_whose_claim_ran_out_are_not_sent(pool, redis, settings, mailbox) -> None:
    """A dispatcher that cannot send before its lease ends puts the rows back unsent, since
    another dispatcher may claim them then; a later dispatch sends each once."""
    addresses = await queue(pool, 3)

    late = await email_jobs.dispatch(pool, redis, settings, lease=dt.timedelta(0), budget=0)
    assert (late.sent, late.retried) == (0, 3)
    assert mailbox.messages == []
    assert {row["last_error"] for row in await rows(pool)} == {"claim ran out before sending"}

    await email_jobs.dispatch(pool, redis, settings)
    assert_each_once(mailbox, addresses)


async def test_concurrent_dispatchers_never_share_a_row(pool, redis, settings, mailbox) -> None:
    addresses = await queue(pool, 60)

    reports = await asyncio.gather(
        *(email_jobs.dispatch(pool, redis, settings, batch=5) for _ in range(3))
    )

    assert sum(r.sent for r in reports) == 60
    assert_each_once(mailbox, addresses)


async def test_a_second_delivery_sends_nothing_while_the_first_runs(
    pool, redis, settings, mailbox
) -> None:
    addresses = await queue(pool, 30)

    reports = await asyncio.gather(
        email_jobs.dispatch(pool, redis, settings, batch=3),
        email_jobs.dispatch(pool, redis, settings, batch=3),
    )

    assert sum(r.sent for r in reports) == 30
    assert_each_once(mailbox, addresses)


async def test_smtp_down_for_a_while_then_back(pool, redis, settings) -> None:
    port = _free_port()  # nothing listens here yet
    down = settings.replace(smtp_url=f"smtp://127.0.0.1:{port}")
    addresses = await queue(pool, 6)

    report = await email_jobs.dispatch(pool, redis, down)

    assert (report.sent, report.retried) == (0, 6)
    for row in await rows(pool):
        assert row["status"] == "queued"
        assert row["attempts"] == 1
        assert "Connect" in row["last_error"]
    assert report.wake_at is not None
    # Until the backoff has passed, nothing is due: a kick now tries nothing.
    idle = await email_jobs.dispatch(pool, redis, down)
    assert (idle.sent, idle.retried) == (0, 0)

    mailbox = Mailbox()
    server = start_server(mailbox, port)
    try:
        await time_passes(pool)
        back = await email_jobs.dispatch(pool, redis, down)
        assert back.sent == 6
        assert_each_once(mailbox, addresses)
        assert {row["status"] for row in await rows(pool)} == {"sent"}
        assert {row["attempts"] for row in await rows(pool)} == {2}
        assert (await email_jobs.dispatch(pool, redis, down)).sent == 0
    finally:
        server.stop()


class Flaky(Mailbox):
    """Answers 451 (try again later) the first time it sees each message."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[str] = set()

    async def handle_DATA(self, server, session, envelope) -> str:
        recipient = envelope.rcpt_tos[0]
        if recipient not in self.seen:
            self.seen.add(recipient)
            return "451 4.3.0 Temporary trouble, try later"
        return await super().handle_DATA(server, session, envelope)


async def test_a_4xx_reply_is_retried_and_then_delivered_once(pool, redis, settings) -> None:
    mailbox = Flaky()
    server = start_server(mailbox)
    try:
        target = settings.replace(smtp_url=f"smtp://127.0.0.1:{server.port}")
        addresses = await queue(pool, 4)

        first = await email_jobs.dispatch(pool, redis, target)
        assert (first.sent, first.retried) == (0, 4)
        assert {row["last_error"] for row in await rows(pool)} == {
            "451 4.3.0 Temporary trouble, try later"
        }

        await time_passes(pool)
        second = await email_jobs.dispatch(pool, redis, target)
        assert second.sent == 4
        assert_each_once(mailbox, addresses)
    finally:
        server.stop()


class Picky(Mailbox):
    """Refuses recipients named `bad…` with 550, and messages to `spam…` at DATA with 554."""

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options) -> str:
        if address.startswith("bad"):
            return "550 5.1.1 No such user here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope) -> str:
        if envelope.rcpt_tos[0].startswith("spam"):
            return "554 5.7.1 Message rejected"
        return await super().handle_DATA(server, session, envelope)


async def test_a_550_fails_that_row_and_the_others_go_on(pool, redis, settings) -> None:
    mailbox = Picky()
    server = start_server(mailbox)
    try:
        target = settings.replace(smtp_url=f"smtp://127.0.0.1:{server.port}")
        good = await queue(pool, 2, prefix="good")
        await queue(pool, 1, prefix="bad")
        more = await queue(pool, 2, prefix="more")
        await queue(pool, 1, prefix="spam")

        report = await email_jobs.dispatch(pool, redis, target)

        assert (report.sent, report.retried, report.failed) == (4, 0, 2)
        assert_each_once(mailbox, good + more)
        outcome = {row["to_address"]: row for row in await rows(pool)}
        assert outcome["bad0@example.com"]["status"] == "failed"
        assert outcome["bad0@example.com"]["last_error"] == "550 5.1.1 No such user here"
        assert outcome["spam0@example.com"]["status"] == "failed"
        assert outcome["spam0@example.com"]["last_error"] == "554 5.7.1 Message rejected"
        # Failed rows are final: nothing is due any more.
        await time_passes(pool)
        assert (await email_jobs.dispatch(pool, redis, target)).failed == 0
    finally:
        server.stop()


async def test_rows_claimed_by_a_dead_worker_are_delivered(pool, redis, settings, mailbox) -> None:
    addresses = await queue(pool, 5)
    # A worker claims every row, then dies before sending anything.
    async with pool.acquire() as conn:
        claimed = await outbox.claim(conn, limit=10, lease=dt.timedelta(minutes=5))
    assert len(claimed) == 5

    # While its claim holds, nobody else touches the rows.
    held = await email_jobs.dispatch(pool, redis, settings)
    assert held.sent == 0
    assert mailbox.messages == []

    # The claim lapses; the sweeper puts the rows back and they go out once.
    async with pool.acquire() as conn:
        await conn.execute("update email_outbox set claimed_until = now() - interval '1 second'")
    released, due = await email_jobs.sweep(pool)
    assert (released, due) == (5, True)
    report = await email_jobs.dispatch(pool, redis, settings)
    assert report.sent == 5
    assert_each_once(mailbox, addresses)
    assert {row["attempts"] for row in await rows(pool)} == {2}


async def test_a_late_outcome_from_a_lapsed_claim_changes_nothing(pool, redis, settings) -> None:
    await queue(pool, 1)
    async with pool.acquire() as conn:
        [first] = await outbox.claim(conn, limit=1, lease=dt.timedelta(minutes=5))
        await conn.execute("update email_outbox set claimed_until = now() - interval '1 second'")
        [second] = await outbox.claim(conn, limit=1, lease=dt.timedelta(minutes=5))
        # The first worker was only slow: its retry must not undo the second worker's claim.
        assert await outbox.mark_retry(conn, [(first["id"], first["attempts"], 10.0, "x")]) == 0
        assert await outbox.mark_sent(conn, [second["id"]]) == 1
        assert await outbox.mark_failed(conn, [(second["id"], second["attempts"], "x")]) == 0


async def test_retries_stop_after_a_day_with_a_record(pool, redis, settings) -> None:
    down = settings.replace(smtp_url=f"smtp://127.0.0.1:{_free_port()}")
    await queue(pool, 1)
    async with pool.acquire() as conn:
        await conn.execute("update email_outbox set created_at = now() - interval '25 hours'")

    report = await email_jobs.dispatch(pool, redis, down)

    [row] = await rows(pool)
    assert row["status"] == "failed"
    assert row["last_error"].startswith("gave up after 1 attempts: ")
    assert report.wake_at is None


async def test_an_email_that_cannot_render_fails_without_retries(
    pool, redis, settings, mailbox
) -> None:
    async with pool.acquire() as conn:
        await outbox.enqueue(
            conn,
            template="invite",
            to="x@example.com",
            context={"org_name": "Acme"},
            dedupe_key="broken",
        )

    report = await email_jobs.dispatch(pool, redis, settings)

    assert report.failed == 1
    [row] = await rows(pool)
    assert row["status"] == "failed"
    assert "cannot build the message" in row["last_error"]
    assert mailbox.messages == []


async def test_counts_for_enforcement(pool, redis, settings, mailbox) -> None:
    await queue(pool, 3, enforcement_id=7, prefix="run")
    await queue(pool, 2, enforcement_id=None, prefix="other")
    async with pool.acquire() as conn:
        assert await outbox.counts_for_enforcement(conn, 7) == (3, 0)
        await email_jobs.dispatch(pool, redis, settings)
        assert await outbox.counts_for_enforcement(conn, 7) == (3, 3)
        assert await outbox.counts_for_enforcement(conn, 8) == (0, 0)


async def test_the_send_rate_is_shared_across_senders(redis, settings) -> None:
    slow = settings.replace(email_rate=0.5)  # one token every two seconds, a bucket of one
    one = mail_rate.SendRate(redis, slow)
    other = mail_rate.SendRate(redis, slow)

    taken, _wait = await redis.eval(mail_rate._TAKE, 1, one.key, 0.5, 1.0, 10)
    assert int(taken) == 1
    taken, wait_ms = await redis.eval(mail_rate._TAKE, 1, other.key, 0.5, 1.0, 1)
    assert int(taken) == 0
    assert 0 < int(wait_ms) <= 2000


async def test_bulk_leaves_a_share_of_the_rate_to_transactional_email(redis, settings) -> None:
    rate = mail_rate.SendRate(redis, settings.replace(email_rate=10.0))
    keys = (rate.key, rate.bulk_key)
    bulk = (rate.rate, rate.burst, rate.bulk_rate, rate.bulk_burst)
    taken, _wait = await redis.eval(mail_rate._TAKE, 2, *keys, *bulk, 100)
    assert int(taken) == 8  # the bulk bucket's second's worth: 80% of EMAIL_RATE
    taken, wait_ms = await redis.eval(mail_rate._TAKE, 2, *keys, *bulk, 1)
    assert int(taken) == 0 and int(wait_ms) > 0  # bulk waits now
    taken, _wait = await redis.eval(mail_rate._TAKE, 1, rate.key, rate.rate, rate.burst, 100)
    assert int(taken) == 2  # what bulk could not take is there for a transactional email


async def test_only_a_few_dispatchers_send_at_once(pool, redis, settings) -> None:
    holders = [mail_slots.Slots(redis, settings) for _ in range(mail_slots.DISPATCHERS)]
    for slots in holders:
        assert await slots.acquire()
    await queue(pool, 1)
    try:
        report = await email_jobs.dispatch(pool, redis, settings)
        assert report.busy and report.sent == 0
    finally:
        for slots in holders:
            await slots.release()
    assert (await email_jobs.dispatch(pool, redis, settings)).sent == 1


async def test_a_dispatch_that_finds_every_slot_taken_schedules_a_wake_up(
    pool, redis, settings
) -> None:
    """Were the holders dead, their slots lapse: the wake-up comes after that, not never."""
    holders = [mail_slots.Slots(redis, settings) for _ in range(mail_slots.DISPATCHERS)]
    for slots in holders:
        assert await slots.acquire()
    try:
        before = dt.datetime.now(dt.UTC)
        report = await email_jobs.dispatch(pool, redis, settings)
    finally:
        for slots in holders:
            await slots.release()
    assert report.busy and report.wake_at is not None
    assert report.wake_at > before + dt.timedelta(milliseconds=mail_slots.SLOT_TTL_MS)


class Slow(Mailbox):
    """Takes `delay` seconds over each message."""

    def __init__(self, delay: float) -> None:
        super().__init__()
        self.delay = delay

    async def handle_DATA(self, server, session, envelope) -> str:
        await asyncio.sleep(self.delay)
        return await super().handle_DATA(server, session, envelope)


async def test_claims_are_renewed_while_their_dispatch_lives(pool, redis, settings) -> None:
    """A batch that takes several leases to send keeps its rows: a second dispatcher claiming
    all along never gets one, and each message goes out once."""
    mailbox = Slow(0.15)
    server = start_server(mailbox)
    target = settings.replace(smtp_url=f"smtp://127.0.0.1:{server.port}")
    addresses = await queue(pool, 12)
    lease = dt.timedelta(seconds=1.5)
    try:
        first = asyncio.create_task(
            email_jobs.dispatch(pool, redis, target, connections=1, lease=lease)
        )

        async def claimed() -> bool:
            return bool(mailbox.messages)

        await until(claimed, "the first dispatch claimed the batch and sends")
        stolen = []
        while not first.done():
            async with pool.acquire() as conn:
                stolen += await outbox.claim(conn, limit=100, lease=lease)
            await asyncio.sleep(0.1)
        report = await first
    finally:
        server.stop()
    assert stolen == []
    assert (report.sent, report.retried) == (12, 0)  # no row given up for a lapsed claim
    assert {row["attempts"] for row in await rows(pool)} == {1}
    assert_each_once(mailbox, addresses)


# --- TLS and authentication ---------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_pair() -> Iterator[tuple[ssl.SSLContext, ssl.SSLContext]]:
    """(server context, client context trusting it) for a self-signed 127.0.0.1 certificate."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        cert_path, key_path = Path(tmp, "cert.pem"), Path(tmp, "key.pem")
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server.load_cert_chain(cert_path, key_path)
    client = ssl.create_default_context(
        cadata=cert.public_bytes(serialization.Encoding.PEM).decode()
    )
    yield server, client


class Authenticated(Mailbox):
    def __init__(self) -> None:
        super().__init__()
        self.logins: list[str] = []

    def __call__(self, server, session, envelope, mechanism, auth_data) -> AuthResult:
        assert isinstance(auth_data, LoginPassword)
        if (auth_data.login, auth_data.password) == (b"mailer", b"p@ss/word"):
            self.logins.append(auth_data.login.decode())
            return AuthResult(success=True)
        return AuthResult(success=False, handled=False)


async def test_starttls_with_authentication(pool, redis, settings, tls_pair) -> None:
    server_tls, client_tls = tls_pair
    mailbox = Authenticated()
    server = start_server(
        mailbox,
        tls_context=server_tls,
        require_starttls=True,
        authenticator=mailbox,
        auth_required=True,
    )
    try:
        url = f"smtp://mailer:{quote('p@ss/word', safe='')}@127.0.0.1:{server.port}?starttls=1"
        addresses = await queue(pool, 3)
        report = await email_jobs.dispatch(
            pool, redis, settings.replace(smtp_url=url), connections=1, tls_context=client_tls
        )
        assert report.sent == 3
        assert_each_once(mailbox, addresses)
        assert mailbox.logins == ["mailer"]  # one connection for the whole batch
    finally:
        server.stop()


async def test_wrong_credentials_are_retried_not_dropped(pool, redis, settings, tls_pair) -> None:
    server_tls, client_tls = tls_pair
    mailbox = Authenticated()
    server = start_server(
        mailbox, tls_context=server_tls, require_starttls=True, authenticator=mailbox
    )
    try:
        url = f"smtp://mailer:wrong@127.0.0.1:{server.port}?starttls=1"
        await queue(pool, 2)
        report = await email_jobs.dispatch(
            pool, redis, settings.replace(smtp_url=url), tls_context=client_tls
        )
        assert (report.sent, report.retried) == (0, 2)
        assert all(row["last_error"].startswith("535") for row in await rows(pool))
    finally:
        server.stop()


async def test_implicit_tls(pool, redis, settings, tls_pair) -> None:
    server_tls, client_tls = tls_pair
    mailbox = Mailbox()
    server = start_server(mailbox, ssl_context=server_tls)
    try:
        addresses = await queue(pool, 2)
        report = await email_jobs.dispatch(
            pool,
            redis,
            settings.replace(smtp_url=f"smtps://127.0.0.1:{server.port}"),
            tls_context=client_tls,
        )
        assert report.sent == 2
        assert_each_once(mailbox, addresses)
    finally:
        server.stop()


# --- End to end: real Dramatiq workers on the Redis broker ----------------------------------


@pytest.fixture
def worker(start_worker, redis_url, smtp_server) -> Iterator[dramatiq.Worker]:
    """Two worker threads consuming the `email` queue (they send to the `smtp_server`)."""
    yield start_worker("email")
    client = sync_redis.Redis.from_url(redis_url)
    for key in client.scan_iter(f"{NAMESPACE}:email:*"):
        client.delete(key)
    client.close()


async def until(check: Callable[[], Awaitable[bool]], what: str, limit: float = 60.0) -> None:
    """Waits for `check()` to hold (bounded, so a broken build fails instead of hanging)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while not await check():
        if loop.time() > deadline:
            raise AssertionError(f"gave up waiting: {what}")
        await asyncio.sleep(0.05)


async def all_sent(pool: asyncpg.Pool) -> bool:
    """Once every row is sent no claim can send one again, so the mailbox is final."""
    async with pool.acquire() as conn:
        return not await conn.fetchval(
            "select exists (select 1 from email_outbox where status <> 'sent')"
        )


@pytest.mark.e2e
async def test_e2e_dispatches_deliver_each_email_once(pool, worker, mailbox) -> None:
    addresses = await queue(pool, 25)  # its commit wakes a dispatcher (`jobs.wakeup`)

    # More dispatches (a redelivered message, the sweeper's) are harmless.
    await asyncio.to_thread(email_jobs.dispatch_job.send)
    await asyncio.to_thread(email_jobs.dispatch_job.send)

    await until(lambda: all_sent(pool), "every row sent")
    assert_each_once(mailbox, addresses)


@pytest.mark.e2e
async def test_e2e_smtp_down_then_back(pool, worker, smtp_server, mailbox) -> None:
    controller = smtp_server[0]
    controller.stop()
    try:
        addresses = await queue(pool, 8)  # its commit wakes a dispatcher

        async def all_retried() -> bool:
            return all(r["status"] == "queued" and r["attempts"] >= 1 for r in await rows(pool))

        await until(all_retried, "every row waiting for a retry")
    finally:
        controller.start()

    await time_passes(pool)
    await asyncio.to_thread(email_jobs.sweep_job.send)  # what the clock does every minute
    await until(lambda: all_sent(pool), "every row sent once the server is back")
    assert_each_once(mailbox, addresses)


@pytest.mark.e2e
async def test_e2e_rows_of_a_killed_worker_are_delivered(pool, worker, mailbox) -> None:
    addresses = await queue(pool, 6)
    async with pool.acquire() as conn:
        await outbox.claim(conn, limit=6, lease=dt.timedelta(minutes=5))
        # The claiming worker was killed; some minutes later its claim has lapsed.
        await conn.execute("update email_outbox set claimed_until = now() - interval '1 second'")

    await asyncio.to_thread(email_jobs.sweep_job.send)

    await until(lambda: all_sent(pool), "every abandoned row sent")
    assert_each_once(mailbox, addresses)
