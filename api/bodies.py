"""Request bodies that the API and the pages' forms both validate, so that an account's email
and password are judged by one rule wherever they are typed."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from api.limits import Email


class RegisterIn(BaseModel):
    email: Email
    password: str = Field(min_length=8, max_length=256)
    name: str = Field(default="", max_length=200)


class LoginIn(BaseModel):
    email: str = Field(min_length=1, max_length=320)
    password: str = Field(min_length=1, max_length=256)


class SsoIn(BaseModel):
    """An organization's identity provider (`PUT organizations/{org}/sso/`, the settings form);
    `clientSecret` may be left out to keep the one saved."""

    model_config = ConfigDict(populate_by_name=True, extra="forbid")

    issuer: str = Field(min_length=1, max_length=500)
    client_id: str = Field(min_length=1, max_length=500, alias="clientId")
    client_secret: str | None = Field(
        default=None, min_length=1, max_length=2000, alias="clientSecret"
    )
    mfa: Literal["local", "idp"] = "local"
