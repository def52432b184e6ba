"""Rows for tests, written the way the application writes them."""

from __future__ import annotations

from typing import Any

import asyncpg
from aiohttp.test_utils import TestClient

from db import members, organizations, users
from require2fa.security import hash_password, new_token, token_hash

PASSWORD = "correct horse battery staple"


async def create_user(
    pool: asyncpg.Pool, email: str, *, name: str = "", has2fa: bool = False
) -> asyncpg.Record:
    """A user with PASSWORD; `has2fa` gives them a confirmed TOTP factor."""
    async with pool.acquire() as conn:
        user = await users.create(
            conn,
            email=email,
            name=name or email.split("@")[0],
            password_hash=hash_password(PASSWORD),
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


__all__ = [
    "PASSWORD",
    "add_member",
    "create_org",
    "create_user",
    "new_token",
    "sign_in",
    "token_for",
]
