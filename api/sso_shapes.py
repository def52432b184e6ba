"""The single sign-on shapes of the API (beside `api/shapes.py`, which re-exports them; the
same rules: each written once as a typed model, `openapi.json`'s schemas derived from them)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import with_config

# pydantic reads TypedDicts from typing_extensions on Python 3.11.
from typing_extensions import TypedDict

from api.shape_kinds import CLOSED

MfaMode = Literal["local", "idp"]


@with_config(CLOSED)
class SsoLink(TypedDict):
    """A member's link to the organization's identity provider: their latest sign-in through
    it, and whether what it asserted meets the requirement now (`mfa: idp`, within 30 days)."""

    linked: bool
    lastSignInAt: datetime | None
    amr: list[str]
    meetsRequirement: bool


@with_config(CLOSED)
class SsoConfig(TypedDict):
    """An organization's identity provider (never its client secret)."""

    issuer: str
    clientId: str
    mfa: MfaMode
    redirectUri: str  # to paste into the identity provider
    hasClientSecret: bool
    domains: list[str]  # lower-case: the sign-in page leads their addresses to this provider
    dateUpdated: datetime
