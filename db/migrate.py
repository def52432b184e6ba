"""Apply `db/migrations/NNNN_name.sql` in order, each in its own transaction, once.

An advisory lock held for the whole run makes two hosts migrating at once safe: the second
waits, then finds nothing left to do.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import structlog

MIGRATIONS = Path(__file__).with_name("migrations")
# Arbitrary constant that identifies our migration lock among all advisory locks.
LOCK_KEY = 0x72_32_66_61_6D_67  # "r2famg"

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Migration:
    version: str
    path: Path

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.path.read_bytes()).hexdigest()


def discover(folder: Path = MIGRATIONS) -> list[Migration]:
    found = sorted(folder.glob("[0-9][0-9][0-9][0-9]_*.sql"))
    return [Migration(path.stem, path) for path in found]


async def migrate(conn: asyncpg.Connection, folder: Path = MIGRATIONS) -> list[str]:
    """Apply what is missing; returns the versions applied by this call."""
    applied_now: list[str] = []
    await conn.execute("select pg_advisory_lock($1)", LOCK_KEY)
    try:
        await conn.execute(
            """create table if not exists schema_migrations (
                   version    text primary key,
                   checksum   text not null,
                   applied_at timestamptz not null default now())"""
        )
        rows = await conn.fetch("select version, checksum from schema_migrations")
        done = {row["version"]: row["checksum"] for row in rows}
        for migration in discover(folder):
            if migration.version in done:
                if done[migration.version] != migration.checksum:
                    log.warning("migration changed after it was applied", version=migration.version)
                continue
            async with conn.transaction():
                await conn.execute(migration.path.read_text())
                await conn.execute(
                    "insert into schema_migrations (version, checksum) values ($1, $2)",
                    migration.version,
                    migration.checksum,
                )
            log.info("migration applied", version=migration.version)
            applied_now.append(migration.version)
    finally:
        await conn.execute("select pg_advisory_unlock($1)", LOCK_KEY)
    return applied_now


async def migrate_url(dsn: str) -> list[str]:
    conn = await asyncpg.connect(dsn)
    try:
        return await migrate(conn)
    finally:
        await conn.close()


async def pending(conn: asyncpg.Connection, folder: Path = MIGRATIONS) -> list[str]:
    """The versions in `folder` that the database has not applied (all, on an empty one)."""
    if await conn.fetchval("select to_regclass('schema_migrations')") is None:
        return [migration.version for migration in discover(folder)]
    done = {row["version"] for row in await conn.fetch("select version from schema_migrations")}
    return [migration.version for migration in discover(folder) if migration.version not in done]
