"""Which emails a person is waiting for: the class of each template, the one rule that the
outbox writes on each row (`db.outbox`) and the sender's rate follows (`jobs.mail.rate`).

Transactional emails (an invitation, a security notice, a run's summary to its owners) go out
ahead of bulk ones (removals, blocks, reminders, countdowns, expiry notices) and have a share of
`EMAIL_RATE` that bulk cannot take; bulk is shared fairly between organizations. Pure data:
imports nothing from `db`.
"""

from __future__ import annotations

from typing import Final, Literal

EmailClass = Literal["transactional", "bulk"]

TRANSACTIONAL: Final = "transactional"
BULK: Final = "bulk"

CLASS_OF: Final[dict[str, EmailClass]] = {
    "invite": TRANSACTIONAL,
    "security_notice": TRANSACTIONAL,
    "enforcement_summary": TRANSACTIONAL,
    "removed_for_2fa": BULK,
    "reminder_2fa": BULK,
    "countdown_2fa": BULK,
    "expiry_soon": BULK,
    "blocked_for_2fa": BULK,
}

# The `lane` column of an outbox row: the claim takes lane 0 before lane 1.
LANES: Final[dict[EmailClass, int]] = {TRANSACTIONAL: 0, BULK: 1}
BULK_LANE: Final = LANES[BULK]

# The part of `EMAIL_RATE` that bulk may use; transactional emails may use all of it.
BULK_SHARE: Final = 0.8


def lane(template: str) -> int:
    return LANES[CLASS_OF[template]]


def lane_sql(template_sql: str) -> str:
    """`lane(template)` as a SQL expression over the column or expression `template_sql`
    (template names are our constants, checked to be plain words)."""
    cases = []
    for template in CLASS_OF:
        assert template.replace("_", "").isalnum(), template
        cases.append(f"when '{template}' then {lane(template)}")
    return f"(case {template_sql} {' '.join(cases)} end)::smallint"
