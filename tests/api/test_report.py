"""The compliance report: `GET …/2fa-compliance/?format=csv` and `require2fa report`."""

from __future__ import annotations

import csv
import io

from click.testing import CliRunner

from db import report
from tests.factories import add_member, add_totp, create_user, owner_and_org, token_for

URL = "/api/0/organizations/acme/2fa-compliance/"


async def acme(pool):
    owner, org = await owner_and_org(
        pool,
        "acme",
        "owner@example.com",
        name="Olive Owner",
        has2fa=True,
        teams=("backend", "frontend"),
    )
    return org, owner, await token_for(pool, owner["id"])


def parse(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


async def test_one_row_per_member_with_state_factors_and_dates(client, pool) -> None:
    org, _owner, headers = await acme(pool)
    alice = await create_user(pool, "alice@example.com", name="Alice")
    await add_member(pool, org["id"], alice, role="admin", teams=("backend", "frontend"))
    bob = await create_user(pool, "bob@example.com", name="Bob")
    await add_member(pool, org["id"], bob)
    async with pool.acquire() as conn:
        await add_totp(conn, bob["id"])
        await conn.execute(
            """insert into authenticators (user_id, type, phone, confirmed_at)
               values ($1, 'sms', '+15550100', '2026-01-02T03:04:05Z')""",
            bob["id"],
        )
        await conn.execute(
            """insert into authenticators (user_id, type, confirmed_at)
               values ($1, 'recovery', now())""",
            bob["id"],
        )
        await conn.execute(
            """insert into members (organization_id, email, role, pending_reason, reinstate_by)
               values ($1, 'carol@example.com', 'member', '2fa', '2026-06-01T00:00:00Z')""",
            org["id"],
        )
        await conn.execute(
            "update members set last_reminded_at = '2026-05-01T10:00:00Z' where email = $1",
            "alice@example.com",
        )

    response = await client.get(URL, params={"format": "csv"}, headers=headers)
    assert response.status == 200, await response.text()
    assert response.headers["Content-Type"].startswith("text/csv")
    assert 'filename="acme-2fa-compliance.csv"' in response.headers["Content-Disposition"]
    text = await response.text()
    assert text.splitlines()[0] == ",".join(report.COLUMNS)
    rows = {row["email"]: row for row in parse(text)}
    assert set(rows) == {
        "owner@example.com",
        "alice@example.com",
        "bob@example.com",
        "carol@example.com",
    }
    assert rows["alice@example.com"] == {
        "email": "alice@example.com",
        "name": "Alice",
        "role": "admin",
        "teams": "backend frontend",
        "state": "active",
        "factor_types": "",
        "2fa_since": "",
        "reinstate_by": "",
        "last_reminded": "2026-05-01T10:00:00Z",
    }
    assert rows["bob@example.com"]["factor_types"] == "sms totp"  # recovery codes are no factor
    assert rows["bob@example.com"]["2fa_since"] == "2026-01-02T03:04:05Z"
    assert rows["carol@example.com"]["state"] == "pending"
    assert rows["carol@example.com"]["reinstate_by"] == "2026-06-01T00:00:00Z"


async def test_a_name_cannot_become_a_spreadsheet_formula(client, pool) -> None:
    org, _owner, headers = await acme(pool)
    for email, name in [
        ("eve@example.com", '=HYPERLINK("http://evil.example","click")'),
        ("mallory@example.com", "+1+cmd|' /C calc'!A0"),
        ("trent@example.com", 'Trent, "the" Tester\nsecond line'),
    ]:
        user = await create_user(pool, email, name=name)
        await add_member(pool, org["id"], user)
    response = await client.get(URL, params={"format": "csv"}, headers=headers)
    rows = {row["email"]: row for row in parse(await response.text())}
    assert rows["eve@example.com"]["name"] == '\'=HYPERLINK("http://evil.example","click")'
    assert rows["mallory@example.com"]["name"] == "'+1+cmd|' /C calc'!A0"
    assert rows["trent@example.com"]["name"] == 'Trent, "the" Tester\nsecond line'


async def test_only_owners_and_managers_get_it(client, pool) -> None:
    org, _owner, _headers = await acme(pool)
    admin = await create_user(pool, "admin@example.com", has2fa=True)
    await add_member(pool, org["id"], admin, role="admin")
    manager = await create_user(pool, "manager@example.com", has2fa=True)
    await add_member(pool, org["id"], manager, role="manager")

    refused = await client.get(
        URL, params={"format": "csv"}, headers=await token_for(pool, admin["id"])
    )
    assert refused.status == 403 and "detail" in await refused.json()
    allowed = await client.get(
        URL, params={"format": "csv"}, headers=await token_for(pool, manager["id"])
    )
    assert allowed.status == 200
    assert len(parse(await allowed.text())) == 3

    outsider = await create_user(pool, "out@example.com", has2fa=True)
    hidden = await client.get(
        URL, params={"format": "csv"}, headers=await token_for(pool, outsider["id"])
    )
    assert hidden.status == 404


async def test_an_unknown_format_is_a_400(client, pool) -> None:
    _org, _owner, headers = await acme(pool)
    response = await client.get(URL, params={"format": "xlsx"}, headers=headers)
    assert response.status == 400
    assert "format" in (await response.json())["detail"]


async def test_a_large_organization_streams_in_many_chunks(client, pool, settings) -> None:
    """5,000 members: the body arrives in pieces, and every member is in it once."""
    from commands.seed import seed

    async with pool.acquire() as conn:
        result = await seed(conn, settings, slug="big", count=5000, enrolled=0.5)
    headers = await token_for(pool, result.owner_id)
    response = await client.get(
        "/api/0/organizations/big/2fa-compliance/", params={"format": "csv"}, headers=headers
    )
    assert response.status == 200
    assert response.headers.get("Transfer-Encoding") == "chunked"
    chunks = [chunk async for chunk in response.content.iter_any()]
    assert len(chunks) > 1
    rows = parse(b"".join(chunks).decode())
    assert len(rows) == result.members  # the owner included
    assert len({row["email"] for row in rows}) == len(rows)
    with_factor = sum(1 for row in rows if row["factor_types"])
    assert with_factor == result.enrolled


async def test_the_cli_writes_the_same_report(client, pool, tmp_path) -> None:
    org, _owner, headers = await acme(pool)
    alice = await create_user(pool, "alice@example.com", name="Alice")
    await add_member(pool, org["id"], alice, teams=("backend",))
    over_http = await (await client.get(URL, params={"format": "csv"}, headers=headers)).text()

    from commands.cli import main

    out = tmp_path / "acme.csv"
    runner = CliRunner()
    result = await _invoke(runner, main, ["report", "--org", "acme", "--output", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_text() == over_http

    missing = await _invoke(runner, main, ["report", "--org", "nope"])
    assert missing.exit_code == 1 and "no organization" in missing.output


async def _invoke(runner, command, args):
    import asyncio

    return await asyncio.to_thread(runner.invoke, command, args)


async def test_a_client_that_goes_away_mid_report_leaves_the_server_well(
    client, pool, settings
) -> None:
    """The reader hangs up after the first chunk: the COPY stops, its connection goes back to
    the pool in a usable state, and the next report is whole."""
    from commands.seed import seed

    async with pool.acquire() as conn:
        result = await seed(conn, settings, slug="big", count=20_000, enrolled=0.5)
    headers = await token_for(pool, result.owner_id)
    url = "/api/0/organizations/big/2fa-compliance/"
    for _ in range(3):
        response = await client.get(url, params={"format": "csv"}, headers=headers)
        assert response.status == 200
        await response.content.readany()
        response.close()  # gone mid-stream
    whole = await client.get(url, params={"format": "csv"}, headers=headers)
    assert len(parse(await whole.text())) == result.members
    members = await client.get("/api/0/organizations/big/members/", headers=headers)
    assert members.status == 200
