"""The `require2fa` command against the test database."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest
from click.testing import CliRunner

from commands.cli import main


@pytest.fixture
def run(database: str, pool: asyncpg.Pool):
    runner = CliRunner()

    def invoke(*args: str, input: str | None = None, **env: str):
        return runner.invoke(
            main,
            list(args),
            input=input,
            env={"DATABASE_URL": database, **env},
            catch_exceptions=False,
        )

    return invoke


def test_migrate_is_repeatable(run) -> None:
    result = run("migrate")
    assert result.exit_code == 0
    assert "none pending" in result.output


def test_createuser_and_createtoken(run, pool) -> None:
    made = run(
        "createuser",
        "--email",
        "Root@Example.com",
        "--password",
        "-",
        "--superuser",
        input="s3cret-passw0rd\n",
    )
    assert made.exit_code == 0, made.output
    again = run("createuser", "--email", "root@example.com")
    assert again.exit_code != 0 and "exists" in again.output
    token = run("createtoken", "--email", "root@example.com")
    assert token.exit_code == 0
    assert len(token.output.strip()) >= 40
    missing = run("createtoken", "--email", "nobody@example.com")
    assert missing.exit_code != 0 and "no user" in missing.output


def test_seed_loads_members_with_the_asked_fraction_enrolled(run, pool) -> None:
    result = run("seed", "--org", "big", "--members", "2000", "--enrolled", "0.7")
    assert result.exit_code == 0, result.output
    again = run("seed", "--org", "big", "--members", "10")
    assert again.exit_code != 0 and "exists" in again.output


def fetchrow(dsn: str, sql: str, *args: object) -> asyncpg.Record:
    async def go() -> asyncpg.Record:
        conn = await asyncpg.connect(dsn)
        try:
            return await conn.fetchrow(sql, *args)
        finally:
            await conn.close()

    return asyncio.run(go())


def test_seeded_rows(run, database) -> None:
    result = run(
        "seed",
        "--org",
        "big",
        "--members",
        "2000",
        "--enrolled",
        "0.7",
        "--owner-email",
        "boss@example.com",
    )
    assert result.exit_code == 0, result.output
    counts = fetchrow(
        database,
        """select count(*) as members,
                      count(*) filter (where exists (select 1 from authenticators a
                          where a.user_id = m.user_id and a.confirmed_at is not null)) as enrolled,
                      count(*) filter (where m.role = 'owner') as owners
               from members m join organizations o on o.id = m.organization_id
               where o.slug = 'big'""",
    )
    owner = fetchrow(
        database,
        "select m.role from members m join users u on u.id = m.user_id where u.email = $1",
        "boss@example.com",
    )["role"]
    teams = fetchrow(database, "select count(distinct member_id) from member_teams")["count"]
    assert counts["members"] == 2001 and counts["owners"] == 1
    assert 1300 <= counts["enrolled"] <= 1500  # 70% of 2000, drawn at random
    assert owner == "owner"
    assert teams == 2001


def test_bad_setting_stops_with_one_line(run) -> None:
    result = run("migrate", REINSTATEMENT_WINDOW="forever")
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        "error: REINSTATEMENT_WINDOW: 'forever' is not a duration such as 90d, 12h, 30m or 2s"
    ]


def test_prune_dry_run_shows_what_would_go_and_prune_removes_it(run, database) -> None:
    fetchrow(
        database,
        """insert into email_outbox (template, to_address, context, dedupe_key, message_id,
                                     status, created_at, sent_at)
           values ('invite', 'old@example.com', '{}', 'old-sent', '<old@test>', 'sent',
                   now() - interval '40 days', now() - interval '40 days'),
                  ('invite', 'new@example.com', '{}', 'new-sent', '<new@test>', 'sent',
                   now() - interval '2 days', now() - interval '2 days')
           returning id""",
    )

    preview = run("prune", "--dry-run", OUTBOX_RETENTION="30d")
    assert preview.exit_code == 0, preview.output
    assert "would delete 1 email row(s)" in preview.output
    assert fetchrow(database, "select count(*) from email_outbox")["count"] == 2

    done = run("prune", OUTBOX_RETENTION="30d")
    assert done.exit_code == 0, done.output
    assert "deleted 1 email row(s)" in done.output
    left = fetchrow(database, "select array_agg(dedupe_key) as keys from email_outbox")["keys"]
    assert left == ["new-sent"]
