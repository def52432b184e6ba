"""What the answers' shapes are made of (`api/shapes.py`, `sso_shapes.py`, `webhook_shapes.py`):
the closed form every shape takes, and the kinds of values they share."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, WithJsonSchema

from db.audit import EVENTS

# Closed (`additionalProperties: false`); each property titled by its key.
CLOSED = ConfigDict(extra="forbid", field_title_generator=lambda name, _field: name)

Id = Annotated[str, Field(pattern="^[0-9]+$")]
Count = Annotated[int, Field(ge=0)]
AnyObject = dict[str, Any]
Role = Literal["owner", "manager", "admin", "member", "billing"]
Level = Literal["any", "secure", "phishing-resistant"]
FactorType = Literal["totp", "sms", "webauthn", "recovery"]
RunStatus = Literal["scheduled", "queued", "running", "completed", "cancelled", "failed"]
Event = Annotated[str, WithJsonSchema({"type": "string", "enum": list(EVENTS)})]
