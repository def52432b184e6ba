"""Users and API tokens."""

from __future__ import annotations

import asyncpg

from require2fa import compliance

# The has2fa rule (`require2fa.compliance`) as a SQL condition on a users alias `u`.
HAS_2FA_SQL = compliance.second_factor_sql("u.id")


async def create(
    conn: asyncpg.Connection,
    *,
    email: str,
    name: str,
    password_hash: str | None,
    is_superuser: bool = False,
) -> asyncpg.Record | None:
    """Insert a user; None when the email is taken."""
    return await conn.fetchrow(
        """insert into users (email, name, password_hash, is_superuser)
           values ($1, $2, $3, $4) on conflict (email) do nothing returning *""",
        email.lower(),
        name,
        password_hash,
        is_superuser,
    )


async def by_email(conn: asyncpg.Connection, email: str) -> asyncpg.Record | None:
    return await conn.fetchrow("select * from users where email = $1", email.lower())


async def by_id(conn: asyncpg.Connection, user_id: int) -> asyncpg.Record | None:
    return await conn.fetchrow(
        f"select u.*, {HAS_2FA_SQL} as has2fa from users u where u.id = $1", user_id
    )


async def has_2fa(
    conn: asyncpg.Connection,
    user_id: int,
    level: str | None = None,
    *,
    organization_id: int | None = None,
) -> bool:
    """Whether the user has a confirmed factor that counts (at `level`, when given), or, with
    `organization_id`, a lasting assertion of that organization's identity provider that does
    (`compliance.idp_mfa_sql`: joining it)."""
    if level is None and organization_id is None:
        return await conn.fetchval(f"select {HAS_2FA_SQL} from users u where u.id = $1", user_id)
    return await conn.fetchval(
        f"""select {compliance.second_factor_sql("u.id", level_sql="$2::text")}
                   or ($3::bigint is not null
                       and {compliance.idp_mfa_sql("u.id", "$3::bigint", level_sql="$2::text")})
            from users u where u.id = $1""",
        user_id,
        compliance.level_of(level),
        organization_id,
    )


async def lock(conn: asyncpg.Connection, user_ids: list[int]) -> None:
    """Row-lock users (in id order, so that two lockers cannot deadlock).

    Enrolling a factor and removing a member for having none both take this lock first, so the
    one that commits second sees what the first one did.
    """
    await conn.execute(
        "select 1 from users where id = any($1::bigint[]) order by id for update", user_ids
    )


async def set_password(conn: asyncpg.Connection, user_id: int, password_hash: str) -> None:
    await conn.execute("update users set password_hash = $2 where id = $1", user_id, password_hash)


async def create_token(
    conn: asyncpg.Connection, *, user_id: int, token_hash: bytes, name: str = ""
) -> int:
    return await conn.fetchval(
        "insert into api_tokens (user_id, token_hash, name) values ($1, $2, $3) returning id",
        user_id,
        token_hash,
        name,
    )
