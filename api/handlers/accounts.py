"""Accounts: register, sign in and out, API tokens, the current user."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import BaseModel, EmailStr, Field

from api.auth import require_user, sign_in, sign_out
from api.errors import api_error, parse_body
from api.keys import PG
from db import users
from require2fa.security import hash_password, new_token, token_hash, verify_password


class RegisterIn(BaseModel):
    email: EmailStr
    password: str = Field(min_length=8, max_length=256)
    name: str = Field(default="", max_length=200)


class LoginIn(BaseModel):
    email: str = Field(min_length=1, max_length=320)
    password: str = Field(min_length=1, max_length=256)


class TokenIn(BaseModel):
    name: str = Field(default="", max_length=200)


def serialize_user(user: Any) -> dict[str, Any]:
    return {
        "id": str(user["id"]),
        "email": user["email"],
        "name": user["name"],
        "has2fa": bool(user["has2fa"]),
        "isSuperuser": user["is_superuser"],
        "dateJoined": user["created_at"].isoformat(),
    }


async def register(request: web.Request) -> web.Response:
    """Creates a user and signs them in."""
    body = await parse_body(request, RegisterIn)
    async with request.app[PG].acquire() as conn:
        user = await users.create(
            conn, email=str(body.email), name=body.name, password_hash=hash_password(body.password)
        )
        if user is None:
            raise api_error(409, "An account with this email already exists.")
        user = await users.by_id(conn, user["id"])
    await sign_in(request, user["id"], half=False)
    return web.json_response(serialize_user(user), status=201)


async def login(request: web.Request) -> web.Response:
    """Checks the password; a user with 2FA is only half signed in until `auth/2fa/`."""
    body = await parse_body(request, LoginIn)
    async with request.app[PG].acquire() as conn:
        user = await users.by_email(conn, body.email)
        if not verify_password(user["password_hash"] if user else None, body.password):
            raise api_error(401, "Invalid email or password.")
        assert user is not None
        user = await users.by_id(conn, user["id"])
    if user["has2fa"]:
        await sign_in(request, user["id"], half=True)
        raise api_error(
            401,
            "Enter a code from your second factor.",
            **{"2faRequired": True, "interfaces": await _interfaces(request, user["id"])},
        )
    await sign_in(request, user["id"], half=False)
    return web.json_response(serialize_user(user))


async def _interfaces(request: web.Request, user_id: int) -> list[str]:
    async with request.app[PG].acquire() as conn:
        rows = await conn.fetch(
            """select distinct type from authenticators
               where user_id = $1 and confirmed_at is not null order by type""",
            user_id,
        )
    return [row["type"] for row in rows]


async def logout(request: web.Request) -> web.Response:
    await sign_out(request)
    return web.Response(status=204)


async def me(request: web.Request) -> web.Response:
    auth = await require_user(request)
    return web.json_response(serialize_user(auth.user))


async def create_api_token(request: web.Request) -> web.Response:
    """Creates an API token for the caller; the token is in this answer and nowhere else."""
    auth = await require_user(request)
    body = await parse_body(request, TokenIn)
    token = new_token()
    async with request.app[PG].acquire() as conn:
        token_id = await users.create_token(
            conn, user_id=auth.user_id, token_hash=token_hash(token), name=body.name
        )
    return web.json_response({"id": str(token_id), "token": token, "name": body.name}, status=201)
