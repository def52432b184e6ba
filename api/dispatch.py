"""Messages the web process sends to the workers once its transaction has committed."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime


async def send_reminders(organization_id: int, asking_user_id: int) -> None:
    """Sends `enforcement.queue_reminders` for today, leaving out the member asking."""
    from jobs.enforcement import queue_reminders

    day = datetime.now(UTC).date().isoformat()
    await asyncio.to_thread(queue_reminders.send, organization_id, day, asking_user_id)
