"""Rows for tests, written the way the application writes them."""

from __future__ import annotations

import asyncio
import time
from functools import cache
from typing import Any

import asyncpg
import dramatiq
from aiohttp.test_utils import TestClient
from argon2 import PasswordHasher

from db import members, organizations, users
from require2fa import email_contexts
from require2fa.security import new_token, token_hash
from require2fa.settings import DEV_SECRET_KEY

PASSWORD = "correct horse battery staple"


@cache
def password_hash() -> str:
    """PASSWORD's hash for the users written here, made once per process: argon2id, as the
    application stores it (`require2fa.security.hash_password`), at the smallest cost. Signing
    in verifies it as it verifies any (with the parameters the hash carries), in a millisecond
    instead of a tenth of a second, or seconds on a busy machine; the application's own cost is
    what the hashes of users who register through it carry (tests/api/test_accounts.py)."""
    return PasswordHasher(time_cost=1, memory_cost=8, parallelism=1).hash(PASSWORD)


async def create_user(
    pool: asyncpg.Pool, email: str, *, name: str = "", has2fa: bool = False
) -> asyncpg.Record:
    """A user with PASSWORD; `has2fa` gives them a confirmed TOTP factor."""
    async with pool.acquire() as conn:
        user = await users.create(
            conn,
            email=email,
            name=name or email.split("@")[0],
            password_hash=password_hash(),
        )
        assert user is not None
        if has2fa:
            await add_totp(conn, user["id"])
    return user


async def add_totp(conn: asyncpg.Connection, user_id: int) -> None:
    """A confirmed TOTP factor (its secret is not usable; tests of codes enroll for real)."""
    await conn.execute(
        """insert into authenticators (user_id, type, name, secret_encrypted, confirmed_at)
           values ($1, 'totp', 'test', 'x', now())""",
        user_id,
    )


async def token_for(pool: asyncpg.Pool, user_id: int) -> dict[str, str]:
    """Authorization headers with a fresh API token of the user."""
    token = new_token()
    async with pool.acquire() as conn:
        await users.create_token(conn, user_id=user_id, token_hash=token_hash(token))
    return {"Authorization": f"Bearer {token}"}


async def create_org(
    pool: asyncpg.Pool, slug: str, owner_id: int, *, teams: tuple[str, ...] = ()
) -> asyncpg.Record:
    async with pool.acquire() as conn:
        org = await organizations.create(conn, slug=slug, name=slug.title())
        assert org is not None
        owner = await users.by_id(conn, owner_id)
        await members.insert_active(
            conn, organization_id=org["id"], user_id=owner_id, email=owner["email"], role="owner"
        )
        for team in teams:
            await organizations.create_team(conn, organization_id=org["id"], slug=team, name=team)
    return org


async def owner_and_org(
    pool: asyncpg.Pool,
    slug: str,
    email: str,
    *,
    name: str = "",
    has2fa: bool = False,
    teams: tuple[str, ...] = (),
) -> tuple[asyncpg.Record, asyncpg.Record]:
    """The set-up most tests start from: a user (`create_user`) who owns a new organization
    (`create_org`, with `teams`); the user and the organization."""
    owner = await create_user(pool, email, name=name, has2fa=has2fa)
    return owner, await create_org(pool, slug, owner["id"], teams=teams)


async def owner_org_and_token(
    pool: asyncpg.Pool,
    slug: str,
    email: str,
    *,
    name: str = "",
    has2fa: bool = False,
    teams: tuple[str, ...] = (),
) -> tuple[asyncpg.Record, asyncpg.Record, dict[str, str]]:
    """`owner_and_org`, and the owner's Authorization headers (`token_for`)."""
    owner, org = await owner_and_org(pool, slug, email, name=name, has2fa=has2fa, teams=teams)
    return owner, org, await token_for(pool, owner["id"])


async def add_member(
    pool: asyncpg.Pool,
    org_id: int,
    user: asyncpg.Record,
    *,
    role: str = "member",
    teams: tuple[str, ...] = (),
    settings: dict[str, Any] | None = None,
) -> int:
    async with pool.acquire() as conn:
        member_id = await members.insert_active(
            conn, organization_id=org_id, user_id=user["id"], email=user["email"], role=role
        )
        found = await organizations.team_ids(conn, org_id, list(teams))
        await members.set_teams(conn, member_id, list(found.values()))
        if settings is not None:
            await members.update(conn, member_id, settings=settings)
    return member_id


async def sign_in(client: TestClient, email: str, password: str = PASSWORD) -> Any:
    response = await client.post("/api/0/auth/login/", json={"email": email, "password": password})
    return response


def totp_code(secret: str, steps_ahead: int = 0) -> str:
    """The TOTP code of `secret` for the current 30 s step, or for a later one (the server
    accepts one step ahead). Each step is accepted once per factor."""
    from require2fa import totp

    return totp.code_at(secret, totp.current_step() + steps_ahead)


async def enroll_totp(client: TestClient, headers: dict[str, str] | None = None) -> str:
    """Sets up TOTP through the API for the caller (session or `headers`); returns the secret.

    The confirmation uses the current step, so the next code to sign in with is
    `totp_code(secret, 1)` (what `sign_in_with_totp` sends)."""
    url = "/api/0/users/me/authenticators/totp/enroll/"
    started = await client.post(url, json={}, headers=headers)
    assert started.status == 200, await started.text()
    secret = (await started.json())["secret"]
    confirmed = await client.post(
        url, json={"secret": secret, "otp": totp_code(secret)}, headers=headers
    )
    assert confirmed.status == 201, await confirmed.text()
    return secret


async def sign_in_with_totp(
    client: TestClient, email: str, secret: str, password: str = PASSWORD
) -> Any:
    """Password, then the second step with the code of the next time step; the 2FA answer."""
    first = await sign_in(client, email, password)
    assert first.status == 401 and (await first.json())["2faRequired"], await first.text()
    return await client.post("/api/0/auth/2fa/", json={"otp": totp_code(secret, 1)})


__all__ = [
    "PASSWORD",
    "add_member",
    "create_org",
    "create_user",
    "enroll_totp",
    "new_token",
    "owner_and_org",
    "owner_org_and_token",
    "password_hash",
    "sign_in",
    "sign_in_with_totp",
    "token_for",
    "totp_code",
]


async def remove_for_2fa(pool: asyncpg.Pool, member_id: int, settings: Any) -> str:
    """Removes an active member for having no 2FA the way an enforcement batch does (pending
    row, `member.pending`, the `removed_for_2fa` email); returns the email's accept link."""
    from db import audit, outbox

    token = new_token()
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            """update members set user_id = null, removed_user_id = user_id, pending_reason = '2fa',
                      token_hash = $2,
                      removed_at = now(), reinstate_by = now() + $3::interval
               where id = $1 and user_id is not null
               returning *""",
            member_id,
            token_hash(token),
            settings.reinstatement_window,
        )
        org = await conn.fetchrow(
            "select * from organizations where id = $1", row["organization_id"]
        )
        teams = await conn.fetchval(
            """select coalesce(array_agg(t.slug order by t.slug), '{}') from member_teams mt
               join teams t on t.id = mt.team_id where mt.member_id = $1""",
            member_id,
        )
        await audit.record(
            conn,
            organization_id=org["id"],
            event="member.pending",
            actor=audit.SYSTEM,
            target_member_id=member_id,
            data={"email": row["email"], "role": row["role"], "teams": teams, "reason": "2fa"},
        )
        context = email_contexts.removed_for_2fa(
            base_url=settings.base_url,
            secret_key=settings.secret_key,
            org_name=org["name"],
            org_slug=org["slug"],
            member_id=member_id,
            member_email=row["email"],
            token=token,
            reinstate_by=row["reinstate_by"],
        )
        await outbox.enqueue(
            conn,
            template="removed_for_2fa",
            to=row["email"],
            context=context,
            dedupe_key=f"removed:test:{member_id}:{token_hash(token).hex()[:16]}",
            organization_id=org["id"],
            member_id=member_id,
        )
    return link_in(context, settings.secret_key)


def link_in(context: Any, secret_key: str = DEV_SECRET_KEY) -> str:
    """The accept link an outbox row's context keeps sealed (a dict, or the jsonb's sealed text)."""
    sealed = context[email_contexts.SEALED_LINK] if isinstance(context, dict) else context
    return email_contexts.open_link(secret_key, str(sealed))


async def settle_enforcement(
    pool: asyncpg.Pool,
    broker: dramatiq.Broker,
    *,
    timeout: float = 90.0,  # noqa: ASYNC109
) -> None:
    """Waits until the workers are done with every run: none is left `queued` (a run's commit
    announces it and a worker's listener sends its coordinator, so a run written a moment ago
    may not be in the queue yet) and the enforcement queue is empty."""
    deadline = time.monotonic() + timeout
    while True:
        async with pool.acquire() as conn:
            waiting = await conn.fetchval(
                "select count(*) from enforcement_runs where status = 'queued'"
            )
        if not waiting:
            await asyncio.to_thread(broker.join, "enforcement", timeout=int(timeout * 1000))
            async with pool.acquire() as conn:
                if not await conn.fetchval(
                    "select count(*) from enforcement_runs where status = 'queued'"
                ):
                    return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{waiting} enforcement run(s) still queued after {timeout} s")
        await asyncio.sleep(0.05)
