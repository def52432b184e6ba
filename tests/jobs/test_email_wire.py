"""What reaches a real SMTP server (aiosmtpd) from the outbox: the bytes written directly parse
to what the templates rendered, an address that is not ASCII goes through SMTPUTF8 only, and
the bound on duplicates holds while rows are marked in the background: a connection hands the
server its next email only once its last one is marked sent."""

from __future__ import annotations

import asyncio
from collections import defaultdict

import asyncpg
import pytest

from db import outbox
from jobs import email as email_jobs
from require2fa.emails import render
from tests.conftest import Mailbox
from tests.jobs.test_email import queue, rows, start_server
from tests.test_emails_render import CASES

NOT_ASCII = "Société Générale — 日本語チーム"


async def test_every_template_arrives_as_it_was_rendered(pool, redis, settings, mailbox) -> None:
    """Each template, with names that are not ASCII, through the outbox to the SMTP server."""
    expected = {}
    async with pool.acquire() as conn:
        for n, case in enumerate(CASES):
            template, context = case.values[0], dict(case.values[1])
            context.update({k: NOT_ASCII for k in ("org_name", "inviter") if k in context})
            to = f"case{n}@example.com"
            await outbox.enqueue(
                conn, template=template, to=to, context=context, dedupe_key=f"wire:{n}"
            )
            expected[to] = render(template, context, settings)

    report = await email_jobs.dispatch(pool, redis, settings)

    assert report.sent == len(CASES)
    assert sorted(str(m["To"]) for m in mailbox.messages) == sorted(expected)
    for message in mailbox.messages:
        rendered = expected[str(message["To"])]
        assert message["Subject"] == rendered.subject
        assert message["From"] == settings.email_from
        text, html = message.get_body(("plain",)), message.get_body(("html",))
        assert text is not None and html is not None
        assert text.get_content().splitlines() == rendered.text.splitlines()
        assert html.get_content().splitlines() == rendered.html.splitlines()


@pytest.mark.parametrize("smtputf8", [True, False])
async def test_an_address_not_ascii_needs_smtputf8(pool, redis, settings, smtputf8) -> None:
    mailbox = Mailbox()
    server = start_server(mailbox, enable_SMTPUTF8=smtputf8)
    try:
        target = settings.replace(smtp_url=f"smtp://127.0.0.1:{server.port}")
        [address] = await queue(pool, 1, prefix="zoë")

        report = await email_jobs.dispatch(pool, redis, target)

        [row] = await rows(pool)
        if smtputf8:
            assert report.sent == 1
            assert [str(m["To"]) for m in mailbox.messages] == [address]
            assert row["status"] == "sent"
        else:
            # As before: the server cannot take the address, and retrying will not change that.
            assert (report.sent, report.failed) == (0, 1)
            assert mailbox.messages == []
            assert row["status"] == "failed"
            assert "SMTPUTF8" in row["last_error"]
    finally:
        server.stop()


class Watching(Mailbox):
    """Before accepting an email, looks in the outbox at the emails it accepted earlier on the
    same connection: each must be marked sent by then (else a crash now would leave two of
    that connection's emails accepted and unmarked, both to go out again)."""

    def __init__(self, dsn: str) -> None:
        super().__init__()
        self.dsn = dsn
        self.conn: asyncpg.Connection | None = None
        self.lock: asyncio.Lock | None = None
        self.accepted: dict[int, list[str]] = defaultdict(list)  # by connection
        self.unmarked: list[str] = []  # accepted earlier on a connection, not marked sent

    async def handle_DATA(self, server, session, envelope) -> str:
        if self.lock is None:
            self.lock = asyncio.Lock()  # on the server's loop: its sessions share a connection
        earlier = self.accepted[id(session)]
        async with self.lock:
            if self.conn is None:
                self.conn = await asyncpg.connect(self.dsn)
            marked = await self.conn.fetchval(
                "select count(*) from email_outbox where to_address = any($1) and status = 'sent'",
                earlier,
            )
        if marked != len(earlier):
            self.unmarked.append(envelope.rcpt_tos[0])
        reply = await super().handle_DATA(server, session, envelope)
        earlier.append(envelope.rcpt_tos[0])
        return reply


async def test_a_connection_sends_its_next_email_once_its_last_is_marked(
    pool, redis, settings
) -> None:
    mailbox = Watching(settings.database_url)
    server = start_server(mailbox)
    try:
        target = settings.replace(smtp_url=f"smtp://127.0.0.1:{server.port}")
        addresses = await queue(pool, 120)

        report = await email_jobs.dispatch(pool, redis, target, batch=40, connections=4)

        assert report.sent == 120
        assert sorted(str(m["To"]) for m in mailbox.messages) == sorted(addresses)
        assert len(mailbox.accepted) == 4  # the connections were reused from batch to batch
        assert mailbox.unmarked == []
        assert {row["status"] for row in await rows(pool)} == {"sent"}
    finally:
        if mailbox.conn is not None:  # on the server's loop, which it belongs to
            closing = asyncio.run_coroutine_threadsafe(mailbox.conn.close(), server.loop)
            await asyncio.wrap_future(closing)
        server.stop()
