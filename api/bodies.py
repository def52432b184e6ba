"""Request bodies that the API and the pages' forms both validate, so that an account's email
and password, an invitation, or an organization's settings, are judged by one rule wherever
they are typed."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from api.limits import Email, TeamSlugs
from require2fa.members import Role
from require2fa.organization_settings import SettingsChange
from require2fa.requirement import EVERYONE, Scope


class RegisterIn(BaseModel):
    email: Email
    password: str = Field(min_length=8, max_length=256)
    name: str = Field(default="", max_length=200)


class LoginIn(BaseModel):
    email: str = Field(min_length=1, max_length=320)
    password: str = Field(min_length=1, max_length=256)


class InviteIn(BaseModel):
    email: Email
    role: Role = "member"
    teams: TeamSlugs = Field(default_factory=list)


class ScopeIn(BaseModel):
    """`require2FAScope`: roles and team slugs (at least one of the two; null is everyone)."""

    model_config = ConfigDict(extra="forbid")

    roles: list[str] = Field(default_factory=list, max_length=10)
    teams: list[str] = Field(default_factory=list, max_length=1000)


class OrganizationUpdate(BaseModel):
    """A settings change (`PUT organizations/{org}/`, the settings page's form): the one parser
    of `SettingsChange`."""

    model_config = ConfigDict(populate_by_name=True, extra="forbid")

    name: str | None = Field(default=None, min_length=1, max_length=200)
    require_2fa: bool | None = Field(default=None, alias="require2FA")
    require_2fa_level: Literal["any", "secure", "phishing-resistant"] | None = Field(
        default=None, alias="require2FALevel"
    )
    sso_enabled: bool | None = Field(default=None, alias="ssoEnabled")
    # With require2FA true: enforce from then on (ISO 8601 with its offset, at most a year ahead).
    enforce_at: AwareDatetime | None = Field(default=None, alias="enforceAt")
    # Absent: unchanged; null: everyone.
    require_2fa_scope: ScopeIn | None = Field(default=None, alias="require2FAScope")
    require_2fa_action: Literal["remove", "block"] | None = Field(
        default=None, alias="require2FAAction"
    )

    def change(self) -> SettingsChange:
        """The change it asks for (`Invalid` when its fields do not go together)."""
        scope = None
        if "require_2fa_scope" in self.model_fields_set:
            asked = self.require_2fa_scope
            scope = EVERYONE if asked is None else Scope.asked(asked.roles, asked.teams)
        return SettingsChange(
            scope=scope,
            action=self.require_2fa_action,
            name=self.name,
            require_2fa=self.require_2fa,
            level=self.require_2fa_level,
            enforce_at=self.enforce_at,
            sso_enabled=self.sso_enabled,
        )


class SsoIn(BaseModel):
    """An organization's identity provider (`PUT organizations/{org}/sso/`, the settings form);
    `clientSecret` and `domains` may be left out to keep the ones saved."""

    model_config = ConfigDict(populate_by_name=True, extra="forbid")

    issuer: str = Field(min_length=1, max_length=500)
    client_id: str = Field(min_length=1, max_length=500, alias="clientId")
    client_secret: str | None = Field(
        default=None, min_length=1, max_length=2000, alias="clientSecret"
    )
    mfa: Literal["local", "idp"] = "local"
    # The email domains whose addresses the sign-in page leads to this provider (lower-cased
    # and checked by `require2fa.single_sign_on.email_domains`).
    domains: list[Annotated[str, Field(max_length=253)]] | None = Field(
        default=None, max_length=100
    )
