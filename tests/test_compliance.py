"""The one definition of compliance: its SQL and its Python check agree, and the partial index of
the migrations covers exactly the factor kinds that count."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from require2fa import compliance
from tests.factories import create_user

# (factors the user has: (type, confirmed)), then whether they count
FACTOR_SETS = [
    ([], False),
    ([("totp", False)], False),
    ([("totp", True)], True),
    ([("sms", True)], True),
    ([("webauthn", True)], True),
    ([("webauthn", False)], False),
    ([("recovery", True)], False),
    ([("recovery", True), ("sms", False)], False),
    ([("recovery", True), ("totp", True)], True),
]


async def _user_with(conn: asyncpg.Connection, pool: asyncpg.Pool, n: int, factors) -> int:
    user = await create_user(pool, f"factors-{n}@example.com")
    for kind, confirmed in factors:
        await conn.execute(
            """insert into authenticators (user_id, type, name, confirmed_at)
               values ($1, $2, 'test', case when $3 then now() end)""",
            user["id"],
            kind,
            confirmed,
        )
    return user["id"]


async def test_sql_and_python_agree(pool: asyncpg.Pool) -> None:
    now = datetime.now(UTC)
    async with pool.acquire() as conn:
        for n, (factors, expected) in enumerate(FACTOR_SETS):
            user_id = await _user_with(conn, pool, n, factors)
            confirmed = [kind for kind, ok in factors if ok]
            assert compliance.meets_requirement(confirmed) is expected
            assert compliance.meets_requirement(confirmed, "any") is expected
            has = await conn.fetchval(
                f"select {compliance.second_factor_sql('u.id')} from users u where u.id = $1",
                user_id,
            )
            at_level = await conn.fetchval(
                f"""select {compliance.second_factor_sql("u.id", level_sql="$2::text")}
                    from users u where u.id = $1""",
                user_id,
                "any",
            )
            assert (has, at_level) == (expected, expected), factors
            # The per-row form that the members pages use says the same.
            probed = await conn.fetchrow(
                f"""select {compliance.second_factor_probe_sql("u.id")},
                           {compliance.second_factor_probe_sql("u.id", level_sql="$2::text")}
                    from users u where u.id = $1""",
                user_id,
                "any",
            )
            assert tuple(probed) == (expected, expected), factors
            # An exemption running now counts, one that has lapsed does not.
            for until, exempt in (
                (now + timedelta(days=1), True),
                (now - timedelta(days=1), False),
            ):
                sql = compliance.noncompliant_sql("u.id", exempt_until_sql="$2::timestamptz")
                lacking = await conn.fetchval(
                    f"select {sql} from users u where u.id = $1", user_id, until
                )
                assert lacking is not (expected or exempt)
                assert compliance.meets_requirement(confirmed, None, until, now) is not lacking
            counted = await conn.fetchval(
                f"""select count(*) from authenticators a
                    where a.user_id = $1 and {compliance.factor_counts_sql("a")}""",
                user_id,
            )
            assert (counted > 0) is expected


async def test_the_partial_index_follows_the_definition(pool: asyncpg.Pool) -> None:
    """The migrations' `authenticators_second_factor` has the predicate that
    `compliance.INDEX_PREDICATE` says; a new factor kind needs a migration that re-creates it."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("create temp table probe (like authenticators) on commit drop")
        await conn.execute(
            "create index probe_second_factor on probe (user_id)"
            f" where {compliance.INDEX_PREDICATE}"
        )
        expected = await conn.fetchval(
            "select pg_get_expr(indpred, indrelid) from pg_index"
            " where indexrelid = 'probe_second_factor'::regclass"
        )
        actual = await conn.fetchval(
            "select pg_get_expr(indpred, indrelid) from pg_index"
            " where indexrelid = 'authenticators_second_factor'::regclass"
        )
        check = await conn.fetchval(
            """select pg_get_constraintdef(oid) from pg_constraint
               where conrelid = 'authenticators'::regclass and contype = 'c'
                 and pg_get_constraintdef(oid) like '%type%'"""
        )
    assert actual == expected
    for kind in compliance.FACTOR_KINDS:
        assert f"'{kind}'" in check


@pytest.mark.parametrize("level", ["any", "secure", "phishing-resistant"])
async def test_each_level_in_sql_and_python_agree(pool: asyncpg.Pool, level: str) -> None:
    """Each level × factor set × exemption (running, lapsed, none): PostgreSQL evaluates
    `second_factor_sql`, `noncompliant_sql` and the factor mask against `level_bits_sql` as
    `meets_requirement` decides (tests/require2fa/ checks the rules without a database)."""
    kinds_sets = [[], ["sms"], ["totp"], ["webauthn"], ["sms", "totp"], ["sms", "webauthn"]]
    kinds_sets += [["recovery"], ["recovery", "sms"]]
    now = datetime.now(UTC)
    exemptions = [None, now + timedelta(days=1), now - timedelta(days=1)]
    has_factor_sql = compliance.second_factor_sql("u.id", level_sql="$2::text")
    lacking_sql = compliance.noncompliant_sql(
        "u.id", level_sql="$2::text", exempt_until_sql="$3::timestamptz"
    )
    mask_sql = f"u.factor_mask & {compliance.level_bits_sql('$2::text')} <> 0"
    async with pool.acquire() as conn:
        for n, kinds in enumerate(kinds_sets):
            user_id = await _user_with(conn, pool, 100 + n, [(k, True) for k in kinds])
            for exempt_until in exemptions:
                meets = compliance.meets_requirement(kinds, level, exempt_until, now)
                has_factor = compliance.meets_requirement(kinds, level)
                got = await conn.fetchrow(
                    f"select {has_factor_sql}, {lacking_sql}, {mask_sql}"
                    " from users u where u.id = $1",
                    user_id,
                    level,
                    exempt_until,
                )
                assert tuple(got) == (has_factor, not meets, has_factor), (
                    level,
                    kinds,
                    exempt_until,
                )
    assert compliance.meets_requirement(["totp"], "secure")
    assert not compliance.meets_requirement(["sms"], "secure")
    assert not compliance.meets_requirement(["totp", "sms"], "phishing-resistant")
