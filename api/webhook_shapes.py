"""The webhook shapes of the API (beside `api/shapes.py`, which re-exports them; the same rules:
each written once as a typed model, `openapi.json`'s schemas derived from them)."""

from __future__ import annotations

from datetime import datetime
from typing import NotRequired

from pydantic import with_config

# pydantic reads TypedDicts from typing_extensions on Python 3.11.
from typing_extensions import TypedDict

from api.shape_kinds import CLOSED, Count, Id


@with_config(CLOSED)
class Webhook(TypedDict):
    id: Id
    url: str
    events: list[str]
    active: bool  # false once turned off, by an owner or by the receiver answering 410
    dateCreated: datetime
    secret: NotRequired[str]  # only in the answer that creates it


@with_config(CLOSED)
class WebhookSecret(TypedDict):
    secret: str  # shown this once; the one it replaces signs beside it for 24 hours


@with_config(CLOSED)
class QueuedDelivery(TypedDict):
    id: Id  # the delivery's id (`webhook-id`, `X-Require2FA-Delivery`)


@with_config(CLOSED)
class LastResponse(TypedDict):
    status: int
    body: str


@with_config(CLOSED)
class Delivery(TypedDict):
    id: Id
    event: str
    auditLogId: Id | None  # none for a ping
    status: str
    attempts: Count
    lastResponse: LastResponse | None
    lastError: str | None
    dateCreated: datetime
    nextAttemptAt: datetime | None
    deliveredAt: datetime | None
