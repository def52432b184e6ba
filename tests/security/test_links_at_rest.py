"""Links are secrets (issue 10, point 4): after a run whose emails went out, and an invitation,
no row of any table holds an accept link's token in the clear, yet the emailed links work;
the logs hold no token either."""

from __future__ import annotations

import re

import asyncpg
import pytest
from aiohttp.test_utils import TestServer

from api.app import create_app
from jobs import email as email_jobs
from jobs.enforcement import remove_batch_now
from require2fa import email_contexts
from tests.factories import add_member, create_user, link_in, owner_and_org, token_for
from tests.jobs.test_enforcement import plan_without_sending, start_run

LINK = re.compile(r"http://testserver/accept/(\d+)/([\w-]+)/")


async def rows_holding(pool: asyncpg.Pool, needle: str) -> list[str]:
    """Every table of the schema whose rows' text contains `needle`."""
    found = []
    async with pool.acquire() as conn:
        tables = await conn.fetch(
            "select quote_ident(tablename) as name from pg_tables where schemaname = 'public'"
        )
        for table in tables:
            # Identifiers from the catalogue, quoted by PostgreSQL itself.
            hits = await conn.fetchval(
                f"select count(*) from {table['name']} t where strpos(t::text, $1) > 0",
                needle,
            )
            if hits:
                found.append(table["name"])
    return found


async def test_no_token_at_rest_and_the_links_work(
    aiohttp_client, pool, settings, redis, mailbox, caplog, capsys
) -> None:
    # As `require2fa web` serves it: aiohttp's own access log off (it would write whole paths);
    # our `request` line, with the token as ***, is the access log.
    server = TestServer(create_app(settings))
    await server.start_server(access_log=None)
    client = await aiohttp_client(server)
    owner, org = await owner_and_org(pool, "acme", "owner@example.com", has2fa=True)
    for name in ("alice", "bob", "carol"):
        await add_member(pool, org["id"], await create_user(pool, f"{name}@example.com"))
    headers = await token_for(pool, owner["id"])
    invited = await client.post(
        "/api/0/organizations/acme/members/", json={"email": "new@example.com"}, headers=headers
    )
    assert invited.status == 201, await invited.text()
    run_id = await start_run(pool, org["id"], owner)
    for _run, batch_no in await plan_without_sending(pool, run_id):
        await remove_batch_now(pool, settings, run_id, batch_no)

    # Queued, not yet sent: the outbox keeps the link sealed only.
    async with pool.acquire() as conn:
        contexts = await conn.fetch(
            "select context from email_outbox where template in ('invite', 'removed_for_2fa')"
        )
    assert len(contexts) == 4
    for row in contexts:
        assert "accept_url" not in row["context"]
        assert email_contexts.SEALED_LINK in row["context"]
        assert LINK.fullmatch(link_in(row["context"]))

    report = await email_jobs.dispatch(pool, redis, settings)
    assert report.sent == 5  # and the owner's run summary
    links = []
    for message in mailbox.messages:
        match = LINK.search(message.get_body(("plain",)).get_content())
        if match:
            links.append(match)
    assert len(links) == 4

    for match in links:
        token = match.group(2)
        assert await rows_holding(pool, token) == []
        # The link works: the API's twin of the page answers with the invitation.
        looked = await client.get(f"/api/0/accept-invite/{match.group(1)}/{token}/")
        assert looked.status == 200, await looked.text()
        page = await client.get(match.group(0).removeprefix("http://testserver"))
        assert page.status == 200
    # Still nowhere after the links were opened.
    for match in links:
        assert await rows_holding(pool, match.group(2)) == []

    logged = caplog.text + "".join(capsys.readouterr())
    assert "accept-invite/" in logged  # the request lines are there, with the token hidden
    for match in links:
        assert match.group(2) not in logged


def test_a_sealed_link_opens_only_under_its_key() -> None:
    sealed = email_contexts.seal_link("a" * 32, "http://testserver/accept/1/tok/")
    assert "tok" not in sealed
    assert email_contexts.open_link("a" * 32, sealed) == "http://testserver/accept/1/tok/"
    with pytest.raises(ValueError):
        email_contexts.open_link("b" * 32, sealed)
    with pytest.raises(ValueError):
        email_contexts.open_link("a" * 32, sealed[:-4] + "AAAA")
