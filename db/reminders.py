"""The "will require two-factor authentication" reminders, queued for a whole organization by
one statement."""

from __future__ import annotations

from typing import Any

import asyncpg

from db.counts import MEETS_LEVEL_SQL
from db.outbox import MESSAGE_ID_SQL


async def queue_reminders(
    conn: asyncpg.Connection,
    *,
    organization_id: int,
    context: dict[str, Any],
    day: str,
    except_user_id: int | None,
) -> int:
    """One `reminder_2fa` email (the same `context` for all, from
    `require2fa.email_contexts.reminder_2fa`) per active member without a second factor that
    the organization's level accepts, at most
    once a day (the dedupe key names the day); returns how many were queued now."""
    key = "'reminder:' || m.organization_id || ':' || m.id || ':' || $3::text"
    result = await conn.execute(
        f"""insert into email_outbox (template, to_address, context, dedupe_key, message_id,
                                      organization_id, member_id)
            select 'reminder_2fa', m.email, $2::jsonb,
                   {key}, {MESSAGE_ID_SQL.format(key=key)}, m.organization_id, m.id
            from members m join users u on u.id = m.user_id
                           join organizations o on o.id = m.organization_id
            where m.organization_id = $1 and u.id is distinct from $4 and not {MEETS_LEVEL_SQL}
            order by m.id
            on conflict (dedupe_key) do nothing""",
        organization_id,
        context,
        day,
        except_user_id,
    )
    return int(result.split()[-1])
