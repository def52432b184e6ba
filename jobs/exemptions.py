"""Exemptions that lapse: the clock sends `exemptions.lapse` every minute.

A thin shim over `require2fa.owner_tools.lapse_exemptions`, idempotent by construction: each
lapsed member is handled in a transaction that clears the exemption, so a second delivery, a
second clock or a retry after a crash finds nothing left to do.
"""

from __future__ import annotations

import dramatiq
import structlog

from jobs.resources import current
from jobs.retry import NO_RETRY
from require2fa import owner_tools

log = structlog.get_logger(__name__)


@dramatiq.actor(
    actor_name="exemptions.lapse",
    queue_name="enforcement",
    **NO_RETRY,  # the clock sends the next one within a minute
    time_limit=10 * 60 * 1000,
)
async def lapse() -> None:
    """Ends lapsed exemptions (`member.2fa-exempt`); where 2FA is required, removes each lapsed
    member who has no second factor (`member.pending`, the Mandatory email, whose commit wakes
    the email dispatcher)."""
    resources = current()
    async with resources.pool.acquire() as conn:
        lapsed, removed = await owner_tools.lapse_exemptions(
            conn,
            base_url=resources.settings.base_url,
            secret_key=resources.settings.secret_key,
            reinstatement_window=resources.settings.reinstatement_window,
        )
    if lapsed:
        log.info("exemptions.lapsed", lapsed=lapsed, removed=removed)
