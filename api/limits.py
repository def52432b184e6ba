"""Size caps on what callers may store (issue 10, point 9), and on a request's body.

Every members list and compliance answer carries each member's `settings`, so one member's
900 KB of them made every such answer 900 KB heavier. The caps are checked when the body is
validated; a value over one is a 400 whose `detail` names the field and the limit.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, EmailStr, Field
from pydantic_core import PydanticCustomError

MAX_BODY_BYTES = 128 * 1024  # any body of ours is far smaller; aiohttp answers 413 above it
MAX_SETTINGS_BYTES = 16 * 1024  # a member's notification settings, as compact JSON
MAX_EMAIL = 254  # RFC 5321's limit on a forward path, less its angle brackets
MAX_TEAMS = 100  # teams named in one invitation or member change
MAX_SLUG = 50


def _settings_size(value: dict[str, Any] | None) -> dict[str, Any] | None:
    if value is None:
        return value
    size = len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())
    if size > MAX_SETTINGS_BYTES:
        raise PydanticCustomError(
            "too_large",
            "Settings may be at most {limit} bytes (16 KB) as JSON; these are {size} bytes.",
            {"limit": MAX_SETTINGS_BYTES, "size": size},
        )
    return value


def _email_size(value: Any) -> Any:
    if isinstance(value, str) and len(value) > MAX_EMAIL:
        raise PydanticCustomError(
            "too_large",
            "An email address may be at most {limit} characters long.",
            {"limit": MAX_EMAIL},
        )
    return value


Email = Annotated[EmailStr, BeforeValidator(_email_size)]
MemberSettings = Annotated[dict[str, Any] | None, AfterValidator(_settings_size)]
TeamSlugs = Annotated[list[Annotated[str, Field(max_length=MAX_SLUG)]], Field(max_length=MAX_TEAMS)]
# Error types that say a size limit was passed: their message becomes the answer's `detail`.
LIMIT_ERRORS = frozenset({"string_too_long", "too_long", "too_large"})
