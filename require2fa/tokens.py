"""A user's API tokens: created (the token shown once, only its hash kept), listed, revoked."""

from __future__ import annotations

import asyncpg

from db import authenticators, users
from require2fa.errors import NotFound
from require2fa.security import new_token, token_hash

NOT_FOUND = "The requested token does not exist."


async def issue(conn: asyncpg.Connection, user_id: int, *, name: str = "") -> tuple[int, str]:
    """A new token for the user: (its id, the token itself, never stored)."""
    token = new_token()
    token_id = await users.create_token(
        conn, user_id=user_id, token_hash=token_hash(token), name=name
    )
    return token_id, token


async def create(pool: asyncpg.Pool, user_id: int, *, name: str = "") -> tuple[int, str]:
    """`issue` on a connection of its own."""
    async with pool.acquire() as conn:
        return await issue(conn, user_id, name=name)


async def listed(pool: asyncpg.Pool, user_id: int) -> list[asyncpg.Record]:
    """The user's tokens: names and dates."""
    async with pool.acquire() as conn:
        return await authenticators.tokens(conn, user_id)


async def revoke(pool: asyncpg.Pool, user_id: int, token_id: int) -> None:
    """Deletes one of the user's tokens (it stops working at once); `NotFound`."""
    async with pool.acquire() as conn:
        if not await authenticators.revoke_token(conn, user_id, token_id):
            raise NotFound("token-not-found", NOT_FOUND)
