"""Request bodies that the API and the pages' forms both validate, so that an account's email
and password, or an invitation, are judged by one rule wherever they are typed."""

from __future__ import annotations

from pydantic import BaseModel, Field

from api.limits import Email, TeamSlugs
from require2fa.members import Role


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
