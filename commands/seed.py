"""Bulk-load a synthetic organization with COPY, for demos and benchmarks."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg
from cryptography.fernet import Fernet

from db import authenticators, members, organizations, users
from require2fa import compliance, totp
from require2fa.security import fernet_key
from require2fa.settings import Settings

TEAMS = ("backend", "frontend", "platform")


@dataclass(frozen=True)
class SeedResult:
    organization_id: int
    members: int
    enrolled: int
    owner_id: int
    seconds: float
    # The secret of the TOTP factor the seed gave an owner who had no second factor (so that
    # the `enforce` which naturally follows is not refused); None when the owner had one.
    owner_totp_secret: str | None = None


async def _reserve_ids(conn: asyncpg.Connection, table: str, count: int) -> list[int]:
    """`count` fresh ids from the table's identity sequence (safe beside concurrent inserts)."""
    rows = await conn.fetch(
        "select nextval(pg_get_serial_sequence($1, 'id')) as id from generate_series(1, $2)",
        table,
        count,
    )
    return [row["id"] for row in rows]


async def _skip_foreign_key_checks(conn: asyncpg.Connection) -> None:
    """Within this transaction, skip the per-row foreign-key triggers, as pg_restore
    --disable-triggers does: every row the seed writes references rows it wrote itself. Needs a
    superuser; without one the load is slower but the same."""
    try:
        async with conn.transaction():  # a savepoint, so a refusal leaves the seed going
            await conn.execute("set local session_replication_role = replica")
    except asyncpg.InsufficientPrivilegeError:
        pass


async def seed(
    conn: asyncpg.Connection,
    settings: Settings,
    *,
    slug: str,
    count: int,
    enrolled: float,
    owner_email: str | None = None,
    random_seed: int = 2,
) -> SeedResult:
    """Creates organization `slug` with `count` members (plus its owner), `enrolled` of them with
    a confirmed TOTP factor, spread over three teams, each with notification settings. An owner
    without a second factor gets a TOTP factor (its secret in the result)."""
    started = time.perf_counter()
    rng = random.Random(random_seed)
    now = datetime.now(UTC)
    # One encrypted secret shared by the synthetic factors: encrypting a million is wasted time.
    secret = Fernet(fernet_key(settings.secret_key, "totp-secret")).encrypt(b"JBSWY3DPEHPK3PXP")
    async with conn.transaction():
        org = await organizations.create(conn, slug=slug, name=slug.replace("-", " ").title())
        if org is None:
            raise ValueError(f"organization {slug!r} exists already")
        org_id = org["id"]
        team_ids = []
        for team in TEAMS:
            row = await organizations.create_team(
                conn, organization_id=org_id, slug=team, name=team.title()
            )
            assert row is not None  # the organization is new
            team_ids.append(row["id"])
        owner_email = (owner_email or f"owner@{slug}.example").lower()
        owner = await users.by_email(conn, owner_email) or await users.create(
            conn, email=owner_email, name="Owner", password_hash=None
        )
        assert owner is not None
        owner_secret = None
        owner_had_2fa = await users.has_2fa(conn, owner["id"])
        if not owner_had_2fa:
            owner_secret = totp.new_secret()
            await authenticators.insert_totp(
                conn,
                user_id=owner["id"],
                name="Authenticator app (seed)",
                secret_encrypted=totp.encrypt_secret(settings.secret_key, owner_secret),
                step=totp.current_step() - 2,
            )
        owner_member = await members.insert_active(
            conn, organization_id=org_id, user_id=owner["id"], email=owner_email, role="owner"
        )
        await members.set_teams(conn, owner_member, team_ids)

        await _skip_foreign_key_checks(conn)
        user_ids = await _reserve_ids(conn, "users", count)
        member_ids = await _reserve_ids(conn, "members", count)
        enrolled_flags = [rng.random() < enrolled for _ in range(count)]
        emails = [f"member{i}@{slug}.example" for i in range(count)]
        roles = ("member", "member", "member", "admin", "manager", "billing")
        # Each user carries from the start the factor mask that its factors make (what the
        # authenticators trigger of migration 0150 would write): the trigger then checks the
        # masks rather than rewrite a million rows.
        totp_mask = compliance.factor_bit("totp")
        await conn.copy_records_to_table(
            "users",
            columns=("id", "email", "name", "factor_mask"),
            records=(
                (user_ids[i], emails[i], f"Member {i}", totp_mask if enrolled_flags[i] else 0)
                for i in range(count)
            ),
        )
        await conn.copy_records_to_table(
            "authenticators",
            columns=("user_id", "type", "name", "secret_encrypted", "confirmed_at"),
            records=(
                (user_ids[i], "totp", "Authenticator app", secret, now)
                for i in range(count)
                if enrolled_flags[i]
            ),
        )
        await conn.copy_records_to_table(
            "members",
            columns=("id", "organization_id", "user_id", "email", "role", "settings"),
            records=(
                (
                    member_ids[i],
                    org_id,
                    user_ids[i],
                    emails[i],
                    roles[i % len(roles)],
                    {"workflow": "always", "deploy": "committed"} if i % 2 else {},
                )
                for i in range(count)
            ),
        )
        await conn.copy_records_to_table(
            "member_teams",
            columns=("member_id", "team_id"),
            records=((member_ids[i], team_ids[i % len(team_ids)]) for i in range(count)),
        )
    await conn.execute("analyze users, members, authenticators, member_teams")
    return SeedResult(
        organization_id=org_id,
        members=count + 1,
        enrolled=sum(enrolled_flags)
        + 1,  # the owner has a second factor too, as `members` counts it
        owner_id=owner["id"],
        seconds=time.perf_counter() - started,
        owner_totp_secret=owner_secret,
    )
