"""Single sign-on rows: an organization's OpenID Connect configuration and linked identities.

The client secret arrives encrypted (`require2fa.sso.encrypt_client_secret`); nothing here
reads or decrypts it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg


async def save_config(
    conn: asyncpg.Connection,
    *,
    organization_id: int,
    issuer: str,
    client_id: str,
    client_secret_encrypted: bytes,
    mfa: str,
    metadata: dict[str, Any],
) -> asyncpg.Record:
    """Writes (or replaces) the organization's configuration with freshly read metadata."""
    return await conn.fetchrow(
        """insert into sso_configs (organization_id, issuer, client_id, client_secret_encrypted,
                                    mfa, metadata)
           values ($1, $2, $3, $4, $5, $6::jsonb)
           on conflict (organization_id) do update
              set issuer = excluded.issuer, client_id = excluded.client_id,
                  client_secret_encrypted = excluded.client_secret_encrypted,
                  mfa = excluded.mfa, metadata = excluded.metadata,
                  metadata_fetched_at = now(), updated_at = now()
           returning *""",
        organization_id,
        issuer,
        client_id,
        client_secret_encrypted,
        mfa,
        metadata,
    )


async def get_config(conn: asyncpg.Connection, organization_id: int) -> asyncpg.Record | None:
    """The configuration, with the email domains it signs in (`domains`, in order)."""
    return await conn.fetchrow(
        """select c.*, array(select d.domain from sso_domains d
                              where d.organization_id = c.organization_id
                              order by d.domain) as domains
           from sso_configs c where c.organization_id = $1""",
        organization_id,
    )


async def claim_domains(
    conn: asyncpg.Connection, *, organization_id: int, domains: Sequence[str]
) -> list[str]:
    """Makes `domains` (lower-case) the ones the organization lists, releasing those it listed
    before and not now; returns those another organization holds, which it does not claim (the
    caller refuses and rolls back). Two organizations claiming at once meet on the primary key:
    the second waits for the first and then finds the domain held."""
    claimed = await conn.fetch(
        """insert into sso_domains (domain, organization_id)
           select distinct d, $1::bigint from unnest($2::text[]) d
           on conflict (domain) do update set domain = excluded.domain
            where sso_domains.organization_id = excluded.organization_id
           returning domain""",
        organization_id,
        list(domains),
    )
    await conn.execute(
        "delete from sso_domains where organization_id = $1 and domain <> all($2::text[])",
        organization_id,
        list(domains),
    )
    return sorted(set(domains) - {row["domain"] for row in claimed})


async def config_by_slug(conn: asyncpg.Connection, slug: str) -> asyncpg.Record | None:
    """The configuration of the organization `slug`, with the organization's id, slug, name
    and requirement level."""
    return await conn.fetchrow(
        """select c.*, o.id, o.slug, o.name, o.require_2fa_level
           from organizations o join sso_configs c on c.organization_id = o.id
           where o.slug = $1""",
        slug,
    )


async def config_by_domain(conn: asyncpg.Connection, domain: str) -> asyncpg.Record | None:
    """The configuration of the organization that lists the email domain `domain` (lower-case),
    as `config_by_slug` gives it."""
    return await conn.fetchrow(
        """select c.*, o.id, o.slug, o.name, o.require_2fa_level
           from sso_domains d
           join sso_configs c on c.organization_id = d.organization_id
           join organizations o on o.id = c.organization_id
           where d.domain = $1""",
        domain,
    )


async def delete_config(conn: asyncpg.Connection, organization_id: int) -> asyncpg.Record | None:
    """Deletes the configuration and its email domains (linked identities stay: a new
    configuration of the same issuer finds them again)."""
    return await conn.fetchrow(
        "delete from sso_configs where organization_id = $1 returning *", organization_id
    )


async def find_identity(
    conn: asyncpg.Connection, *, issuer: str, sub: str
) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "select * from sso_identities where issuer = $1 and sub = $2", issuer, sub
    )


async def record_sign_in(
    conn: asyncpg.Connection,
    *,
    issuer: str,
    sub: str,
    user_id: int,
    organization_id: int,
    amr: Sequence[str],
    acr: str | None,
    auth_time: datetime | None,
) -> asyncpg.Record:
    """Links (`issuer`, `sub`) to `user_id` on the first sign-in and records what each sign-in
    asserted. An identity already linked keeps its user: the row returned says whose it is,
    and the caller compares it with the user it meant."""
    return await conn.fetchrow(
        """insert into sso_identities (issuer, sub, user_id, organization_id, amr, acr, auth_time)
           values ($1, $2, $3, $4, $5::text[], $6, $7)
           on conflict (issuer, sub) do update
              set last_sign_in_at = now(), amr = excluded.amr, acr = excluded.acr,
                  auth_time = excluded.auth_time
           returning *, (xmax = 0) as linked_now""",
        issuer,
        sub,
        user_id,
        organization_id,
        list(amr),
        acr,
        auth_time,
    )
