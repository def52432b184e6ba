"""Dramatiq jobs. `dramatiq jobs` imports this: the broker first, then every actor module.

Queues and their actors:
- `enforcement` (jobs/enforcement.py): `enforcement.coordinate` plans a run into batches,
  `enforcement.remove_batch` removes one batch, `enforcement.sweep` re-drives stalled runs
- `email` (jobs/email.py): `email.dispatch` delivers due outbox rows, `email.sweep` re-drives
  rows a crashed worker left claimed
- `enforcement` also (jobs/exemptions.py): `exemptions.lapse` ends lapsed exemptions (and
  removes those members where 2FA is required and they have no second factor)
- `enforcement` also (jobs/scheduled.py): `enforcement.scheduled` starts the runs scheduled for
  now (`enforceAt`) and sends the countdown reminders 14, 7 and 1 days before
- `webhooks` (jobs/webhooks.py; the posting in jobs/webhook_delivery.py through the guarded
  client of jobs/webhook_client.py): `webhooks.dispatch` posts due webhook deliveries,
  `webhooks.sweep` re-drives deliveries a crashed worker left claimed
- `maintenance` (jobs/maintenance.py): `maintenance.purge_expired`, `maintenance.expiry_reminders`

`require2fa clock` sends the sweepers every minute and the maintenance jobs daily.
Nobody sends a dispatch or a coordinator after a commit by hand: the database announces the
commit and `jobs/wakeup.py` (a worker middleware) sends `email.dispatch`, `webhooks.dispatch`
or `enforcement.coordinate`.
"""

from jobs.broker import broker  # noqa: F401  (must come before any actor module)

# isort: split
from jobs import email, enforcement, exemptions, maintenance, scheduled, webhooks  # noqa: F401
