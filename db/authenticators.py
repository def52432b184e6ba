"""The credentials a user manages: second factors, recovery codes and API tokens.

Every decision that must hold under parallel requests is one statement: a TOTP step is claimed
with a conditional UPDATE, a recovery code is spent with an UPDATE ... WHERE used_at IS NULL.
"""

from __future__ import annotations

import asyncpg

from require2fa import compliance

_SELECT = """
    select a.id, a.user_id, a.type, a.name, a.phone, a.phone_hint, a.secret_encrypted,
           a.last_used_step, a.credential_id, a.public_key, a.sign_count, a.transports,
           a.confirmed_at, a.created_at, a.last_used_at,
           case when a.type = 'recovery' then
               (select count(*) from recovery_codes rc
                where rc.authenticator_id = a.id and rc.used_at is null)
           end as unused_codes
    from authenticators a
"""


async def for_user(conn: asyncpg.Connection, user_id: int) -> list[asyncpg.Record]:
    """The user's confirmed factors, oldest first."""
    return await conn.fetch(
        _SELECT + " where a.user_id = $1 and a.confirmed_at is not null order by a.id", user_id
    )


async def get(
    conn: asyncpg.Connection, user_id: int, authenticator_id: int, *, lock: bool = False
) -> asyncpg.Record | None:
    return await conn.fetchrow(
        _SELECT + " where a.user_id = $1 and a.id = $2" + (" for update of a" if lock else ""),
        user_id,
        authenticator_id,
    )


async def of_type(conn: asyncpg.Connection, user_id: int, type_: str) -> list[asyncpg.Record]:
    """The user's confirmed factors of one type."""
    return await conn.fetch(
        _SELECT + " where a.user_id = $1 and a.type = $2 and a.confirmed_at is not null"
        " order by a.id",
        user_id,
        type_,
    )


async def kinds(conn: asyncpg.Connection, user_id: int) -> list[str]:
    """The types of the user's confirmed factors, each once, in order."""
    rows = await conn.fetch(
        """select distinct type from authenticators
           where user_id = $1 and confirmed_at is not null order by type""",
        user_id,
    )
    return [row["type"] for row in rows]


async def insert_totp(
    conn: asyncpg.Connection, *, user_id: int, name: str, secret_encrypted: bytes, step: int
) -> asyncpg.Record:
    """A confirmed TOTP factor; `step` (the one that confirmed it) counts as used.

    `confirmed_at` is the moment of the insert (not the transaction's start), so that, taken
    after the user's lock as enrollment does, it says when the factor started to count: later
    than any removal that the lock made it wait for."""
    return await conn.fetchrow(
        """insert into authenticators (user_id, type, name, secret_encrypted, last_used_step,
                                       confirmed_at)
           values ($1, 'totp', $2, $3, $4, clock_timestamp()) returning *""",
        user_id,
        name,
        secret_encrypted,
        step,
    )


async def insert_sms(
    conn: asyncpg.Connection, *, user_id: int, name: str, phone: str, phone_hint: str
) -> asyncpg.Record:
    """A backup phone: `phone` sealed by the caller, `phone_hint` the masked number shown."""
    return await conn.fetchrow(
        """insert into authenticators (user_id, type, name, phone, phone_hint, confirmed_at)
           values ($1, 'sms', $2, $3, $4, clock_timestamp()) returning *""",
        user_id,
        name,
        phone,
        phone_hint,
    )


async def set_phone(conn: asyncpg.Connection, factor_id: int, phone: str) -> None:
    """Replaces a backup phone's stored number (sealed by the caller)."""
    await conn.execute("update authenticators set phone = $2 where id = $1", factor_id, phone)


async def insert_webauthn(
    conn: asyncpg.Connection,
    *,
    user_id: int,
    name: str,
    credential_id: bytes,
    public_key: bytes,
    sign_count: int,
    transports: list[str],
) -> asyncpg.Record | None:
    """A confirmed security key or passkey; None when that credential is registered already
    (to this account or another)."""
    return await conn.fetchrow(
        """insert into authenticators (user_id, type, name, credential_id, public_key, sign_count,
                                       transports, confirmed_at)
           values ($1, 'webauthn', $2, $3, $4, $5, $6, clock_timestamp())
           on conflict (credential_id) where credential_id is not null do nothing
           returning *""",
        user_id,
        name,
        credential_id,
        public_key,
        sign_count,
        transports,
    )


async def webauthn_by_credential(
    conn: asyncpg.Connection, user_id: int, credential_id: bytes
) -> asyncpg.Record | None:
    """The user's key with this credential id (another user's key is not found)."""
    return await conn.fetchrow(
        _SELECT + " where a.user_id = $1 and a.type = 'webauthn' and a.credential_id = $2",
        user_id,
        credential_id,
    )


async def claim_webauthn_counter(
    conn: asyncpg.Connection, authenticator_id: int, seen: int, new_count: int
) -> bool:
    """Record a verified assertion's counter; False when the row no longer holds `seen` (a
    parallel use of the same key got there first) or the counter did not go forward.

    An authenticator that keeps no counter reports 0 every time; then the single-use challenge
    is what stops a replay.
    """
    claimed = await conn.fetchval(
        """update authenticators set sign_count = $3, last_used_at = now()
           where id = $1 and sign_count = $2 and ($3 > $2 or ($3 = 0 and $2 = 0))
           returning id""",
        authenticator_id,
        seen,
        new_count,
    )
    return claimed is not None


async def rename(
    conn: asyncpg.Connection, user_id: int, authenticator_id: int, name: str
) -> asyncpg.Record | None:
    """Renames one of the user's factors (not the recovery codes); the row, or None."""
    renamed = await conn.fetchval(
        """update authenticators set name = $3
           where user_id = $1 and id = $2 and type <> 'recovery' and confirmed_at is not null
           returning id""",
        user_id,
        authenticator_id,
        name,
    )
    return await get(conn, user_id, renamed) if renamed is not None else None


async def claim_totp_step(conn: asyncpg.Connection, authenticator_id: int, step: int) -> bool:
    """Record `step` as used; False when it (or a later one) was used already.

    Two requests with the same code race on the row: the second waits for the first, then
    re-checks the condition against the committed row and updates nothing.
    """
    claimed = await conn.fetchval(
        """update authenticators set last_used_step = $2, last_used_at = now()
           where id = $1 and (last_used_step is null or last_used_step < $2)
           returning id""",
        authenticator_id,
        step,
    )
    return claimed is not None


async def touch(conn: asyncpg.Connection, authenticator_id: int) -> None:
    await conn.execute(
        "update authenticators set last_used_at = now() where id = $1", authenticator_id
    )


async def count_second_factors(
    conn: asyncpg.Connection, user_id: int, *, excluding: int | None = None
) -> int:
    return await conn.fetchval(
        f"""select count(*) from authenticators a
            where a.user_id = $1 and {compliance.factor_counts_sql("a")}
              and ($2::bigint is null or a.id <> $2)""",
        user_id,
        excluding,
    )


async def delete_all(conn: asyncpg.Connection, user_id: int) -> list[str]:
    """Deletes every factor of the user, recovery codes included (by cascade); returns the
    kinds deleted, one per factor."""
    rows = await conn.fetch("delete from authenticators where user_id = $1 returning type", user_id)
    return sorted(row["type"] for row in rows)


async def needed_by_requirement(
    conn: asyncpg.Connection, user_id: int, authenticator_id: int
) -> asyncpg.Record | None:
    """The first organization (`name`, `level`) of the user that requires 2FA of them (it has
    them in its scope) and whose level they meet now and would not without this factor; None
    when removing it leaves every such requirement met."""
    with_it = compliance.second_factor_sql("$1", level_sql="o.require_2fa_level")
    without = (
        "exists (select 1 from authenticators a where a.user_id = $1 and a.id <> $2 and "
        + compliance.factor_counts_sql("a", level_sql="o.require_2fa_level")
        + ")"
    )
    return await conn.fetchrow(
        f"""select o.name, o.require_2fa_level as level
            from members m join organizations o on o.id = m.organization_id
            where m.user_id = $1 and o.require_2fa
              and {compliance.in_scope_sql("m.id", "m.role")}
              and {with_it} and not {without}
            order by o.name limit 1""",
        user_id,
        authenticator_id,
    )


async def delete(conn: asyncpg.Connection, authenticator_id: int) -> None:
    await conn.execute("delete from authenticators where id = $1", authenticator_id)


# --- Recovery codes -----------------------------------------------------------------------


async def recovery(conn: asyncpg.Connection, user_id: int) -> asyncpg.Record | None:
    return await conn.fetchrow(_SELECT + " where a.user_id = $1 and a.type = 'recovery'", user_id)


async def replace_recovery_codes(
    conn: asyncpg.Connection, *, user_id: int, code_hashes: list[bytes]
) -> int:
    """A new set of recovery codes (a new factor row); the old set, if any, is gone.

    Call inside a transaction that holds the user's lock (`users.lock`), so that two
    regenerations cannot both insert.
    """
    await conn.execute(
        "delete from authenticators where user_id = $1 and type = 'recovery'", user_id
    )
    authenticator_id = await conn.fetchval(
        """insert into authenticators (user_id, type, name, confirmed_at)
           values ($1, 'recovery', 'Recovery codes', now()) returning id""",
        user_id,
    )
    await conn.execute(
        """insert into recovery_codes (authenticator_id, code_hash)
           select $1, h from unnest($2::bytea[]) as h""",
        authenticator_id,
        code_hashes,
    )
    return authenticator_id


async def delete_recovery(conn: asyncpg.Connection, user_id: int) -> int | None:
    """Remove the user's recovery codes; the id of the factor row removed, if there was one."""
    return await conn.fetchval(
        "delete from authenticators where user_id = $1 and type = 'recovery' returning id",
        user_id,
    )


async def use_recovery_code(conn: asyncpg.Connection, user_id: int, code_hash: bytes) -> int | None:
    """Spend one unused code of the user; the factor's id, or None if there is no such code.

    A second use (also a parallel one) finds `used_at` set and updates nothing.
    """
    return await conn.fetchval(
        """with spent as (
               update recovery_codes rc set used_at = now()
               from authenticators a
               where a.id = rc.authenticator_id and a.user_id = $1 and a.type = 'recovery'
                 and rc.code_hash = $2 and rc.used_at is null
               returning rc.authenticator_id)
           update authenticators set last_used_at = now()
           where id = (select authenticator_id from spent)
           returning id""",
        user_id,
        code_hash,
    )


async def recovery_code_spent(conn: asyncpg.Connection, user_id: int, code_hash: bytes) -> bool:
    """Whether `code_hash` is one of the user's current recovery codes, already used."""
    return bool(
        await conn.fetchval(
            """select exists (
                   select from recovery_codes rc
                   join authenticators a on a.id = rc.authenticator_id
                   where a.user_id = $1 and a.type = 'recovery'
                     and rc.code_hash = $2 and rc.used_at is not null)""",
            user_id,
            code_hash,
        )
    )


# --- API tokens ---------------------------------------------------------------------------


async def tokens(conn: asyncpg.Connection, user_id: int) -> list[asyncpg.Record]:
    """The user's API tokens (never the tokens themselves: only their hashes are stored)."""
    return await conn.fetch(
        """select id, name, created_at, last_used_at from api_tokens
           where user_id = $1 order by id""",
        user_id,
    )


async def revoke_token(conn: asyncpg.Connection, user_id: int, token_id: int) -> bool:
    """Delete one of the user's tokens; it stops working at once."""
    deleted = await conn.fetchval(
        "delete from api_tokens where user_id = $1 and id = $2 returning id", user_id, token_id
    )
    return deleted is not None


async def revoke_tokens(conn: asyncpg.Connection, user_id: int, *, keep: int | None = None) -> int:
    """Deletes every token of the user but `keep` (the caller's own, or None: all of them); how
    many. They stop working at once."""
    done = await conn.execute(
        "delete from api_tokens where user_id = $1 and id is distinct from $2", user_id, keep
    )
    return int(done.split()[-1])
