"""The single sign-on rows (migration 0180, db/sso.py) and the client secret at rest."""

from __future__ import annotations

from datetime import UTC, datetime

import asyncpg
import pytest

from db import sso as sso_rows
from require2fa import compliance, sso
from require2fa.errors import Invalid
from require2fa.settings import DEV_SECRET_KEY
from tests.factories import create_org, create_user
from tests.test_sso_rules import CASES

METADATA = {"issuer": "https://idp.example", "jwks_uri": "https://idp.example/jwks"}


async def test_a_configuration_keeps_its_secret_encrypted(pool: asyncpg.Pool) -> None:
    owner = await create_user(pool, "owner@example.com")
    org = await create_org(pool, "acme", owner["id"])
    stored = sso.encrypt_client_secret(DEV_SECRET_KEY, "s3cret")

    async with pool.acquire() as conn:
        await sso_rows.save_config(
            conn,
            organization_id=org["id"],
            issuer="https://idp.example",
            client_id="app",
            client_secret_encrypted=stored,
            mfa="local",
            metadata=METADATA,
        )
        row = await sso_rows.save_config(
            conn,
            organization_id=org["id"],
            issuer="https://idp.example",
            client_id="app",
            client_secret_encrypted=stored,
            mfa="idp",
            metadata=METADATA,
        )
        found = await sso_rows.get_config(conn, org["id"])

    assert found is not None and found["mfa"] == "idp" and row["mfa"] == "idp"
    assert found["metadata"] == METADATA
    assert b"s3cret" not in bytes(found["client_secret_encrypted"])
    assert sso.decrypt_client_secret(DEV_SECRET_KEY, found["client_secret_encrypted"]) == "s3cret"
    with pytest.raises(Invalid):
        sso.decrypt_client_secret("another-secret-key", found["client_secret_encrypted"])


async def test_an_identity_stays_linked_to_its_first_user(pool: asyncpg.Pool) -> None:
    alice = await create_user(pool, "alice@example.com")
    mallory = await create_user(pool, "mallory@example.com")
    org = await create_org(pool, "acme", alice["id"])
    at = datetime(2026, 12, 1, tzinfo=UTC)

    async with pool.acquire() as conn:
        first = await sso_rows.record_sign_in(
            conn,
            issuer="https://idp.example",
            sub="42",
            user_id=alice["id"],
            organization_id=org["id"],
            amr=["pwd"],
            acr=None,
            auth_time=at,
        )
        again = await sso_rows.record_sign_in(
            conn,
            issuer="https://idp.example",
            sub="42",
            user_id=mallory["id"],
            organization_id=org["id"],
            amr=["pwd", "hwk"],
            acr="phr",
            auth_time=at,
        )
        found = await sso_rows.find_identity(conn, issuer="https://idp.example", sub="42")

    assert first["linked_now"] is True and again["linked_now"] is False
    assert found is not None and found["user_id"] == alice["id"]
    assert found["amr"] == ["pwd", "hwk"] and found["acr"] == "phr"
    assert found["auth_time"] == at


async def test_deleting_a_configuration(pool: asyncpg.Pool) -> None:
    owner = await create_user(pool, "owner@example.com")
    org = await create_org(pool, "acme", owner["id"])
    async with pool.acquire() as conn:
        await sso_rows.save_config(
            conn,
            organization_id=org["id"],
            issuer="https://idp.example",
            client_id="app",
            client_secret_encrypted=sso.encrypt_client_secret(DEV_SECRET_KEY, "s"),
            mfa="local",
            metadata=METADATA,
        )
        assert await sso_rows.delete_config(conn, org["id"]) is not None
        assert await sso_rows.get_config(conn, org["id"]) is None
        assert await sso_rows.delete_config(conn, org["id"]) is None


@pytest.mark.parametrize(("amr", "acr", "level", "meets"), CASES)
async def test_the_sql_rule_agrees_with_the_python_rule(
    pool: asyncpg.Pool, amr: list[str] | None, acr: str | None, level: str | None, meets: bool
) -> None:
    """`compliance.idp_mfa_sql` and `idp_mfa_meets` are one rule (`IDP_LEVELS`) rendered twice."""
    user, org = await _idp_org(pool)
    await _signed_in(pool, user["id"], org["id"], amr=amr or [], acr=acr)

    assert await _meets(pool, user["id"], org["id"], level) is meets


async def test_the_identity_providers_mfa_counts_only_in_idp_mode_and_for_30_days(
    pool: asyncpg.Pool,
) -> None:
    user, org = await _idp_org(pool)
    await _signed_in(pool, user["id"], org["id"], amr=["otp"], acr=None)
    assert await _meets(pool, user["id"], org["id"], "any")

    async with pool.acquire() as conn:
        await conn.execute("update sso_identities set last_sign_in_at = now() - interval '29 days'")
        assert await _meets(pool, user["id"], org["id"], "any")
        await conn.execute("update sso_identities set last_sign_in_at = now() - interval '31 days'")
        assert not await _meets(pool, user["id"], org["id"], "any")
        await conn.execute("update sso_identities set last_sign_in_at = now()")
        await conn.execute("update sso_configs set mfa = 'local'")
        assert not await _meets(pool, user["id"], org["id"], "any")
        assert await conn.fetchval("select sso_mfa from organizations") == "local"
        await conn.execute("update sso_configs set mfa = 'idp', issuer = 'https://other.example'")
        assert not await _meets(pool, user["id"], org["id"], "any")  # another provider now
        await conn.execute("delete from sso_configs")
        assert await conn.fetchval("select sso_mfa from organizations") is None


async def _idp_org(pool: asyncpg.Pool) -> tuple[asyncpg.Record, asyncpg.Record]:
    owner = await create_user(pool, "owner@example.com")
    org = await create_org(pool, "acme", owner["id"])
    async with pool.acquire() as conn:
        await sso_rows.save_config(
            conn,
            organization_id=org["id"],
            issuer="https://idp.example",
            client_id="app",
            client_secret_encrypted=sso.encrypt_client_secret(DEV_SECRET_KEY, "s"),
            mfa="idp",
            metadata=METADATA,
        )
        assert await conn.fetchval("select sso_mfa from organizations") == "idp"
    return owner, org


async def _signed_in(
    pool: asyncpg.Pool, user_id: int, org_id: int, *, amr: list[str], acr: str | None
) -> None:
    async with pool.acquire() as conn:
        await sso_rows.record_sign_in(
            conn,
            issuer="https://idp.example",
            sub="s1",
            user_id=user_id,
            organization_id=org_id,
            amr=amr,
            acr=acr,
            auth_time=None,
        )


async def _meets(pool: asyncpg.Pool, user_id: int, org_id: int, level: str | None) -> bool:
    condition = compliance.idp_mfa_sql("$1::bigint", "$2::bigint", level_sql="$3::text")
    async with pool.acquire() as conn:
        return await conn.fetchval(f"select {condition}", user_id, org_id, level)
