"""The maintained compliance count (migration 0150) against the direct count, after every kind of
change that moves it: factors of each kind enrolled and removed, invitations accepted, an
enforcement run, rejoining, the purge, a member deleted, exemptions granted and lapsed, a level
change, a user in two organizations, a user deleted, the seed's bulk load. The direct count,
member by member with `require2fa.compliance`'s conditions, is the truth."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from commands.seed import seed
from db import authenticators, counts, maintenance, members
from db.audit import Actor
from jobs.enforcement import coordinate_run, remove_batch_now
from require2fa import compliance, organization_settings
from require2fa.security import new_token, token_hash
from tests.factories import create_org, create_user, owner_and_org

LEVELS = (None, *compliance.LEVELS)


async def assert_counts_agree(pool: asyncpg.Pool) -> None:
    """For every organization, level and caller left out: the maintained count equals the direct
    one; and the counter rows equal the memberships grouped by the mask of their user's factors,
    computed afresh from `authenticators`."""
    async with pool.acquire() as conn:
        orgs = await conn.fetch(
            """select o.id, (select m.user_id from members m
                             where m.organization_id = o.id and m.role = 'owner'
                             order by m.id limit 1) as owner_id
               from organizations o order by o.id"""
        )
        for org in orgs:
            for level in LEVELS:
                for except_user_id in (None, org["owner_id"]):
                    args = dict(except_user_id=except_user_id, level=level)
                    direct = await counts.count_noncompliant_directly(conn, org["id"], **args)
                    kept = await counts.count_noncompliant(conn, org["id"], **args)
                    assert kept == direct, (org["id"], level, except_user_id)
        expected = await conn.fetch(
            """select m.organization_id, coalesce(f.mask, 0) as mask, count(*) as n
               from members m
               left join (select user_id, bit_or(factor_bit(type)) as mask from authenticators
                          where confirmed_at is not null group by user_id) f
                 on f.user_id = m.user_id
               where m.user_id is not null
               group by 1, 2 order by 1, 2"""
        )
        kept = await conn.fetch(
            """select organization_id, factor_mask as mask, sum(members) as n
               from member_factor_counts group by 1, 2 having sum(members) <> 0 order by 1, 2"""
        )
    assert [tuple(r) for r in kept] == [tuple(r) for r in expected]


def test_the_sql_factor_bits_are_the_definitions() -> None:
    assert [compliance.factor_bit(kind) for kind in compliance.FACTOR_KINDS] == [1, 2, 4]
    assert compliance.factor_bit("recovery") == 0
    for level, kinds in compliance.LEVELS.items():
        for mask in range(1 << len(compliance.FACTOR_KINDS)):
            held = [k for k in compliance.FACTOR_KINDS if compliance.factor_bit(k) & mask]
            meets = bool(mask & compliance.level_bits(level))
            assert meets is compliance.meets_requirement(held, level), (level, held)
        assert compliance.level_bits(level) == compliance.factor_mask(kinds)


async def test_the_migration_s_factor_bit_follows_factor_kinds(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        for kind in (*compliance.FACTOR_KINDS, "recovery", "other"):
            assert await conn.fetchval("select factor_bit($1)", kind) == compliance.factor_bit(kind)
        for level in compliance.LEVELS:
            got = await conn.fetchval(f"select {compliance.level_bits_sql('$1::text')}", level)
            assert got == compliance.level_bits(level)


async def _active(pool: asyncpg.Pool, org_id: int, user: asyncpg.Record, role="member") -> int:
    async with pool.acquire() as conn:
        return await members.insert_active(
            conn, organization_id=org_id, user_id=user["id"], email=user["email"], role=role
        )


async def _webauthn(conn: asyncpg.Connection, user_id: int) -> int:
    row = await authenticators.insert_webauthn(
        conn,
        user_id=user_id,
        name="key",
        credential_id=new_token().encode(),
        public_key=b"k",
        sign_count=0,
        transports=[],
    )
    assert row is not None
    return row["id"]


async def test_the_maintained_count_follows_every_change(pool: asyncpg.Pool, settings) -> None:
    owner, org = await owner_and_org(pool, "counts", "owner@counts.test", has2fa=True)
    other = await create_org(pool, "other", owner["id"])
    people = {
        name: await create_user(pool, f"{name}@counts.test")
        for name in ("alice", "bob", "carol", "dave", "erin")
    }
    member_ids = {name: await _active(pool, org["id"], user) for name, user in people.items()}
    # erin belongs to both organizations
    await _active(pool, other["id"], people["erin"])
    await assert_counts_agree(pool)

    async with pool.acquire() as conn:
        # Each factor kind enrolled, then removed, one at a time and together.
        alice = people["alice"]["id"]
        totp = await authenticators.insert_totp(
            conn, user_id=alice, name="app", secret_encrypted=b"x", step=1
        )
        await assert_counts_agree(pool)
        sms = await authenticators.insert_sms(
            conn, user_id=alice, name="phone", phone="+15550100", phone_hint="•••0100"
        )
        await assert_counts_agree(pool)
        key = await _webauthn(conn, alice)
        await assert_counts_agree(pool)
        # Recovery codes and a factor's use count for nothing.
        await authenticators.replace_recovery_codes(
            conn, user_id=alice, code_hashes=[token_hash("a")]
        )
        await authenticators.touch(conn, totp["id"])
        assert await authenticators.claim_webauthn_counter(conn, key, 0, 5)
        await assert_counts_agree(pool)
        for factor_id in (totp["id"], key, sms["id"]):
            await authenticators.delete(conn, factor_id)
            await assert_counts_agree(pool)
        # Factors of every kind for the others; erin's move her in both organizations.
        await authenticators.insert_sms(
            conn, user_id=people["bob"]["id"], name="phone", phone="+15550101", phone_hint="•••0100"
        )
        await _webauthn(conn, people["carol"]["id"])
        await authenticators.insert_totp(
            conn, user_id=people["erin"]["id"], name="app", secret_encrypted=b"x", step=1
        )
        await assert_counts_agree(pool)
        # An unconfirmed factor becomes confirmed (and back).
        unconfirmed = await conn.fetchval(
            """insert into authenticators (user_id, type, name) values ($1, 'totp', 'later')
               returning id""",
            people["dave"]["id"],
        )
        await assert_counts_agree(pool)
        await conn.execute(
            "update authenticators set confirmed_at = now() where id = $1", unconfirmed
        )
        await assert_counts_agree(pool)
        await conn.execute(
            "update authenticators set confirmed_at = null where id = $1", unconfirmed
        )
        await assert_counts_agree(pool)
        # Every factor of a user at once (the owners' reset).
        await authenticators.delete_all(conn, people["bob"]["id"])
        await assert_counts_agree(pool)

        # An invitation, then accepted by a new user with a factor.
        frank = await create_user(pool, "frank@counts.test", has2fa=True)
        invited = await members.insert_pending(
            conn,
            organization_id=org["id"],
            email="frank@counts.test",
            role="member",
            token_hash=token_hash("t"),
            invited_by=owner["id"],
        )
        assert invited is not None
        await assert_counts_agree(pool)
        await members.reinstate(conn, invited, user_id=frank["id"], email=frank["email"])
        await assert_counts_agree(pool)

        # Exempt, then lapsed (its time passes), then lifted.
        soon = datetime.now(UTC) + timedelta(days=1)
        await members.set_exemption(
            conn, member_ids["dave"], until=soon, reason="CI bot", by=Actor(user_id=owner["id"])
        )
        await assert_counts_agree(pool)
        await conn.execute(
            "update members set exempt_2fa_until = now() - interval '1 second' where id = $1",
            member_ids["dave"],
        )
        await assert_counts_agree(pool)
        await members.set_exemption(conn, member_ids["dave"], until=None, reason=None, by=None)
        await assert_counts_agree(pool)
        await members.set_exemption(
            conn, member_ids["alice"], until=soon, reason="bot", by=Actor(user_id=owner["id"])
        )

        # The level rises: the count reads the organization's level.
        await conn.execute(
            "update organizations set require_2fa_level = 'secure' where id = $1", org["id"]
        )
        await assert_counts_agree(pool)

    # An enforcement run removes the members who do not meet `secure` (bob, dave; not the
    # exempt alice, nor carol with her key, nor erin with TOTP).
    async with pool.acquire() as conn, conn.transaction():
        change = await organization_settings.change_organization(
            conn,
            organization_settings.SettingsChange(require_2fa=True),
            organization_id=org["id"],
            actor=Actor(user_id=owner["id"], label=owner["email"], ip_address="127.0.0.1"),
            role="owner",
        )
    assert change.run is not None
    sent: list[tuple[int, int]] = []
    await coordinate_run(pool, change.run["id"], send=lambda *args: sent.append(args))
    for run_id, batch_no in sent:
        await remove_batch_now(pool, settings, run_id, batch_no)
    async with pool.acquire() as conn:
        removed = await conn.fetchval(
            "select count(*) from members where removed_by_run = $1", change.run["id"]
        )
    assert removed == 2
    await assert_counts_agree(pool)

    async with pool.acquire() as conn:
        # bob sets up a key and rejoins.
        await _webauthn(conn, people["bob"]["id"])
        await assert_counts_agree(pool)
        await members.reinstate(
            conn, member_ids["bob"], user_id=people["bob"]["id"], email=people["bob"]["email"]
        )
        await assert_counts_agree(pool)
        # dave's window passes: the purge deletes his pending row.
        await conn.execute(
            "update members set reinstate_by = now() - interval '1 day' where id = $1",
            member_ids["dave"],
        )
        purged = await maintenance.purge_expired(conn)
        assert purged.purged == 1
        await assert_counts_agree(pool)
        # A member deleted; a user deleted (erin, from both organizations).
        await members.delete(conn, member_ids["carol"])
        await assert_counts_agree(pool)
        await conn.execute("delete from users where id = $1", people["erin"]["id"])
        await assert_counts_agree(pool)
        # The seed's bulk load (COPY, without per-row triggers) is counted too.
        await seed(conn, settings, slug="seeded", count=300, enrolled=0.5)
        await assert_counts_agree(pool)
        # A truncated table is counted again from scratch.
        truncation = conn.transaction()
        await truncation.start()
        await conn.execute("truncate authenticators cascade")
        await assert_counts_agree_on(conn)
        await truncation.rollback()
        # An organization deleted takes its counter rows with it.
        await conn.execute("delete from organizations where id = $1", other["id"])
        assert not await conn.fetchval(
            "select count(*) from member_factor_counts where organization_id = $1", other["id"]
        )
        await assert_counts_agree(pool)


async def assert_counts_agree_on(conn: asyncpg.Connection) -> None:
    """`assert_counts_agree` inside one connection's transaction (the counter rows only)."""
    expected = await conn.fetch(
        """select m.organization_id, coalesce(f.mask, 0) as mask, count(*) as n
           from members m
           left join (select user_id, bit_or(factor_bit(type)) as mask from authenticators
                      where confirmed_at is not null group by user_id) f on f.user_id = m.user_id
           where m.user_id is not null group by 1, 2 order by 1, 2"""
    )
    kept = await conn.fetch(
        """select organization_id, factor_mask as mask, sum(members) as n
           from member_factor_counts group by 1, 2 having sum(members) <> 0 order by 1, 2"""
    )
    assert [tuple(r) for r in kept] == [tuple(r) for r in expected]


@pytest.mark.parametrize("first", ["membership", "factor"])
async def test_a_factor_and_a_membership_changing_at_once(pool: asyncpg.Pool, first: str) -> None:
    """A user's factor enrolled while their membership goes (or comes): whichever commits
    first, the other waits for it on the user's row and reads what it wrote."""
    owner, org = await owner_and_org(pool, "race", "owner@race.test", has2fa=True)
    user = await create_user(pool, "racer@race.test")
    member_id = await _active(pool, org["id"], user)
    async with pool.acquire() as one, pool.acquire() as two:
        membership = one.transaction()
        factor = two.transaction()
        await membership.start()
        await factor.start()
        remove = "update members set user_id = null, pending_reason = '2fa' where id = $1"
        if first == "membership":
            await one.execute(remove, member_id)
            waiting = asyncio.create_task(
                authenticators.insert_sms(
                    two, user_id=user["id"], name="p", phone="+15550102", phone_hint="•••0100"
                )
            )
            await _blocked(pool)
            await membership.commit()
            await waiting
            await factor.commit()
        else:
            await authenticators.insert_sms(
                two, user_id=user["id"], name="p", phone="+15550102", phone_hint="•••0100"
            )
            waiting = asyncio.create_task(one.execute(remove, member_id))
            await _blocked(pool)
            await factor.commit()
            await waiting
            await membership.commit()
    await assert_counts_agree(pool)
    async with pool.acquire() as conn:
        await members.reinstate(conn, member_id, user_id=user["id"], email=user["email"])
    await assert_counts_agree(pool)


async def _blocked(pool: asyncpg.Pool) -> None:
    """Waits until some connection of this database waits on a lock (or two seconds: without
    the lock, the counts are what then tell)."""
    async with pool.acquire() as conn:
        for _ in range(100):
            if await conn.fetchval(
                """select count(*) from pg_stat_activity
                   where wait_event_type = 'Lock' and datname = current_database()"""
            ):
                return
            await asyncio.sleep(0.02)
