"""Backup phone: E.164 numbers, one-time codes kept in Redis, and sending them through SMS_URL.

SMS_URL `console:` writes the message to the log; in development also to
`<DATA_DIR>/sms.jsonl`, which the development mailbox shows. An `https://` URL receives a
JSON POST `{"to", "body"}`. A code is stored hashed under a key that expires after five minutes
and is taken with a compare-and-delete, so it works once.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import re
import secrets
import ssl
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import redis.asyncio as aioredis
import structlog

from require2fa.security import derive_key, seal, unseal
from require2fa.settings import Settings

log = structlog.get_logger(__name__)

CODE_TTL_SECONDS = 5 * 60
# In development, the `console:` gateway's messages, one JSON object a line, under DATA_DIR.
CONSOLE_FILE = "sms.jsonl"
SEND_TIMEOUT_SECONDS = 10.0
_E164 = re.compile(r"^\+[1-9]\d{6,14}$")
_SEPARATORS = re.compile(r"[\s().-]")

# Delete the key only when it holds the expected value: one winner, however many try at once.
_TAKE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    redis.call('DEL', KEYS[1])
    return 1
end
return 0
"""


class SmsError(Exception):
    """The message could not be handed to the SMS gateway."""


def normalize_phone(text: str) -> str | None:
    """The number in E.164 (`+14155550123`), or None. Spaces, dots, dashes, brackets ignored."""
    phone = _SEPARATORS.sub("", text)
    return phone if _E164.match(phone) else None


def mask_phone(phone: str) -> str:
    return phone[:2] + "*" * max(0, len(phone) - 6) + phone[-4:]


SEALED = "sealed:"  # the marker of a number sealed at rest (migration 0200)


def seal_phone(secret_key: str, phone: str) -> str:
    """The number as `authenticators.phone` keeps it: sealed under a key derived from
    SECRET_KEY, like TOTP secrets."""
    return SEALED + seal(secret_key, "phone", phone)


def open_phone(secret_key: str, stored: str) -> str:
    """The number `seal_phone` sealed; a row from before migration 0200 is the number itself."""
    if stored.startswith(SEALED):
        return unseal(secret_key, "phone", stored.removeprefix(SEALED))
    return stored


def new_code() -> str:
    return f"{secrets.randbelow(10**6):06d}"


def _key(namespace: str, purpose: str, user_id: int) -> str:
    return f"{namespace}:sms-code:{purpose}:{user_id}"


def _digest(settings: Settings, binding: str, code: str) -> str:
    key = derive_key(settings.secret_key, "sms-code")
    return hmac.new(key, f"{binding}:{code}".encode(), hashlib.sha256).hexdigest()


async def store_code(
    redis: aioredis.Redis,
    settings: Settings,
    *,
    purpose: str,
    user_id: int,
    binding: str,
    code: str,
) -> None:
    """Remember `code` for five minutes, for `purpose` ("enroll", "login") of `user_id`, bound
    to `binding` (the phone number being enrolled, or the factor signed in with). A newer code
    replaces an older one."""
    await redis.set(
        _key(settings.redis_namespace, purpose, user_id),
        _digest(settings, binding, code),
        ex=CODE_TTL_SECONDS,
    )


async def take_code(
    redis: aioredis.Redis,
    settings: Settings,
    *,
    purpose: str,
    user_id: int,
    binding: str,
    code: str,
) -> bool:
    """True once for the stored code (then it is gone); False for anything else."""
    code = code.strip()
    if len(code) != 6 or not code.isdigit():
        return False
    taken = await redis.eval(  # type: ignore[misc]
        _TAKE,
        1,
        _key(settings.redis_namespace, purpose, user_id),
        _digest(settings, binding, code),
    )
    return int(taken) == 1


def _append_console(data_dir: Path, to: str, body: str) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    line = json.dumps(
        {"time": datetime.now(UTC).isoformat(timespec="seconds"), "to": to, "body": body}
    )
    with (data_dir / CONSOLE_FILE).open("a", encoding="utf-8") as file:
        file.write(line + "\n")  # one write of a short line: whole even beside another process


def console_messages(data_dir: Path, limit: int = 20) -> list[dict[str, str]]:
    """The latest text messages of the `console:` gateway in development, newest first."""
    try:
        lines = (data_dir / CONSOLE_FILE).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []
    found = []
    for line in reversed(lines[-limit:]):
        with contextlib.suppress(ValueError):
            found.append({k: str(v) for k, v in json.loads(line).items()})
    return found


def clear_console(data_dir: Path) -> None:
    (data_dir / CONSOLE_FILE).unlink(missing_ok=True)


async def send(
    settings: Settings,
    to: str,
    body: str,
    *,
    ssl_context: ssl.SSLContext | None = None,
    time_limit: float = SEND_TIMEOUT_SECONDS,
) -> None:
    """Send one text message; raises SmsError when the gateway cannot be reached or refuses."""
    if settings.sms_url == "console:":
        log.info("sms.console", to=to, body=body)
        if settings.development:
            await asyncio.to_thread(_append_console, Path(settings.data_dir), to, body)
        return
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=time_limit)) as session,
            session.post(
                settings.sms_url,
                json={"to": to, "body": body},
                ssl=ssl_context if ssl_context is not None else True,
            ) as response,
        ):
            if response.status >= 300:
                raise SmsError(f"SMS gateway answered {response.status}")
    except (aiohttp.ClientError, TimeoutError) as err:
        raise SmsError(f"SMS gateway unreachable: {err.__class__.__name__}") from err
    log.info("sms.sent", to=mask_phone(to))
