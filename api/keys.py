"""Typed application keys: everything the handlers share lives under one of these."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import asyncpg
import redis.asyncio as aioredis
from aiohttp import web

from require2fa.settings import Settings
from require2fa.sso import KeyCache

SETTINGS = web.AppKey("settings", Settings)
PG = web.AppKey("pg", asyncpg.Pool)
REDIS = web.AppKey("redis", aioredis.Redis)
# What builds `openapi.json` (`api.openapi.build`), for the `/docs/` page, which may not import
# the routes table that names it.
OPENAPI: web.AppKey[Callable[[], dict[str, Any]]] = web.AppKey("openapi")
SSO_KEYS = web.AppKey("sso_keys", KeyCache)  # identity providers' JWKS, shared by sign-ins

SESSION_COOKIE = "r2fa_session"  # the session cookie's name (api.auth, api.csrf)
