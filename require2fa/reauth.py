"""Recent re-authentication ("sudo mode"): the rule for sensitive changes.

Removing a factor, regenerating recovery codes, creating an API token, turning the requirement
off or lowering its level, resetting a member's 2FA, exempting a member and creating a webhook
each need a password or second-factor check within the last `WINDOW` in the session that asks
(docs/SECURITY.md). API tokens are not subject to it: a program holding one cannot type a password.
The HTTP side is `api.auth.require_sudo`.
"""

from __future__ import annotations

import time
from datetime import timedelta

from require2fa.errors import NotSignedIn

WINDOW = timedelta(minutes=10)
# Where a session keeps the time (epoch seconds) of its last password or second-factor check.
SESSION_FIELD = "reauth_at"
REQUIRED_CODE = "sudo-required"
REQUIRED_DETAIL = "Confirm your password or a code from your second factor to continue."


def required() -> NotSignedIn:
    """The refusal of a sensitive change without a recent check (the one sentence)."""
    return NotSignedIn(REQUIRED_CODE, REQUIRED_DETAIL)


def is_recent(checked_at: object, now: float | None = None) -> bool:
    """Whether a check made at `checked_at` (epoch seconds, as stored) still counts."""
    if not isinstance(checked_at, int | float) or isinstance(checked_at, bool):
        return False
    now = time.time() if now is None else now
    return 0 <= now - checked_at <= WINDOW.total_seconds()
