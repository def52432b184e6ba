"""`require2fa remind`: what `POST …/2fa-reminders/` does, here and now, with a progress bar.

Queues today's "{org} will require two-factor authentication" email to every active member
without a second factor (at most one per member per day, recorded as `lastRemindedAt`), then
asks the email workers to deliver them.
"""

from __future__ import annotations

from datetime import UTC, datetime

import asyncpg
import click
from tqdm import tqdm

from db import counts, organizations
from require2fa import reminders
from require2fa.settings import Settings


async def remind(conn: asyncpg.Connection, settings: Settings, slug: str) -> reminders.Reminded:
    org = await organizations.by_slug(conn, slug)
    if org is None:
        raise click.ClickException(f"no organization with slug {slug!r}")
    total = await counts.count_noncompliant(conn, org["id"], except_user_id=None)
    with tqdm(total=total, unit="member", unit_scale=True, desc="reminders") as bar:
        return await reminders.remind(
            conn,
            organization_id=org["id"],
            base_url=settings.base_url,
            day=datetime.now(UTC).date().isoformat(),
            on_chunk=lambda chunk: bar.update(chunk.seen),
        )
