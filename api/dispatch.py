"""Messages the web process sends to the workers once its transaction has committed."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import structlog

log = structlog.get_logger(__name__)


async def send_coordinator(run_id: int) -> None:
    """Sends `enforcement.coordinate` for a committed run. If Redis is unreachable the run stays
    queued and `enforcement.sweep` sends it later; the answer does not wait for that."""
    from jobs.enforcement import coordinate

    try:
        await asyncio.to_thread(coordinate.send, run_id)
    except Exception:  # the run is committed; the sweeper sends it again
        log.exception("enforcement.coordinate_not_sent", run_id=run_id)


async def send_reminders(organization_id: int, asking_user_id: int) -> None:
    """Sends `enforcement.queue_reminders` for today, leaving out the member asking."""
    from jobs.enforcement import queue_reminders

    day = datetime.now(UTC).date().isoformat()
    await asyncio.to_thread(queue_reminders.send, organization_id, day, asking_user_id)
