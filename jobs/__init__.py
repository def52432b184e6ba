"""Dramatiq jobs. `dramatiq jobs` imports this: the broker first, then every actor module.

Queues:
- `enforcement`: the require-2FA fan-out (coordinator, batches)
- `email`: outbox delivery
- `maintenance`: sweepers, purge and reminders that the clock schedules
"""

from jobs.broker import broker  # noqa: F401  (must come before any actor module)

# isort: split
from jobs import email  # noqa: F401
from jobs import enforcement  # noqa: F401
from jobs import maintenance  # noqa: F401
