"""One `Settings` object, read from the environment once and passed to whoever needs it."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

DEV_SECRET_KEY = "development-only-secret-key-do-not-use-in-production"  # noqa: S105
_DURATION = re.compile(r"^\s*(\d+)\s*([smhd]?)\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "": 1}


class SettingsError(ValueError):
    """A setting is missing or malformed; `str(err)` is one line naming the variable."""

    def __init__(self, variable: str, problem: str) -> None:
        super().__init__(f"{variable}: {problem}")
        self.variable = variable


def parse_duration(text: str) -> timedelta:
    """`90d`, `12h`, `30m`, `2s` or a bare number of seconds."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a duration such as 90d, 12h, 30m or 2s")
    seconds = int(match.group(1)) * _UNITS[match.group(2)]
    if seconds <= 0:
        raise ValueError("must be longer than zero")
    return timedelta(seconds=seconds)


@dataclasses.dataclass(frozen=True, kw_only=True)
class SmtpTarget:
    host: str
    port: int
    username: str | None
    password: str | None
    use_tls: bool
    start_tls: bool


def parse_smtp_url(url: str) -> SmtpTarget:
    parts = urlsplit(url)
    if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
        raise ValueError("expected smtp://user:pass@host:port or smtps://…")
    query = parse_qs(parts.query)
    implicit = parts.scheme == "smtps"
    try:
        port = parts.port or (465 if implicit else 25)
    except ValueError as err:
        raise ValueError(f"bad port ({err})") from None
    return SmtpTarget(
        host=parts.hostname,
        port=port,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        use_tls=implicit,
        start_tls=query.get("starttls", ["0"])[0] in ("1", "true", "yes"),
    )


@dataclasses.dataclass(frozen=True, kw_only=True)
class Settings:
    """Everything configurable. Tests build `Settings(**overrides)`; processes use `from_env()`."""

    environment: str = "development"
    database_url: str | None = None
    redis_url: str | None = None
    # The Dramatiq broker: `amqp://` selects RabbitMQ; unset, the Redis at `redis_url` serves.
    broker_url: str | None = None
    smtp_url: str = "smtp://127.0.0.1:1025"
    email_from: str = "require2fa <no-reply@require2fa.localhost>"
    email_rate: float = 100.0
    base_url: str = "http://localhost:8000"
    secret_key: str = DEV_SECRET_KEY
    port: int = 8000
    reinstatement_window: timedelta = timedelta(days=90)
    sms_url: str = "console:"
    log_format: str = "text"
    data_dir: str = ".require2fa"
    # Prefix for every Redis key we own (queues, rate limits); lets test runs share one Redis.
    redis_namespace: str = "require2fa"

    def __post_init__(self) -> None:
        if self.environment not in ("development", "production"):
            raise SettingsError("ENVIRONMENT", "must be development or production")
        if self.environment != "development" and self.secret_key == DEV_SECRET_KEY:
            raise SettingsError("SECRET_KEY", "must be set outside development")
        if len(self.secret_key) < 16:
            raise SettingsError("SECRET_KEY", "must be at least 16 characters long")
        if self.log_format not in ("json", "text"):
            raise SettingsError("LOG_FORMAT", "must be json or text")
        if not self.base_url.startswith(("http://", "https://")):
            raise SettingsError("BASE_URL", "must start with http:// or https://")
        if not (self.sms_url == "console:" or self.sms_url.startswith("https://")):
            raise SettingsError("SMS_URL", "must be console: or an https:// URL")
        if self.email_rate <= 0:
            raise SettingsError("EMAIL_RATE", "must be a positive number of emails per second")
        if not 0 < self.port < 65536:
            raise SettingsError("PORT", "must be a TCP port number")
        for name, url, schemes, expected in (
            ("DATABASE_URL", self.database_url, ("postgres", "postgresql"), "a postgresql://"),
            ("REDIS_URL", self.redis_url, ("redis", "rediss", "unix"), "a redis://"),
            (
                "BROKER_URL",
                self.broker_url,
                ("amqp", "amqps", "redis", "rediss", "unix"),
                "an amqp:// or redis://",
            ),
        ):
            if url is not None and urlsplit(url).scheme not in schemes:
                raise SettingsError(name, f"must be {expected} URL")
        try:
            parse_smtp_url(self.smtp_url)
        except ValueError as err:
            raise SettingsError("SMTP_URL", str(err)) from None

    @property
    def development(self) -> bool:
        return self.environment == "development"

    @property
    def secure_cookies(self) -> bool:
        return self.base_url.startswith("https://")

    @property
    def smtp(self) -> SmtpTarget:
        return parse_smtp_url(self.smtp_url)

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_env(cls, environ: Mapping[str, str], **defaults: Any) -> Settings:
        """Read the variables of CONTRACT §4; a bad one raises `SettingsError` naming it.

        Without `ENVIRONMENT=development` (which `require2fa dev`, `make demo` and the tests set)
        the process counts as production and needs a real `SECRET_KEY`.
        """
        values: dict[str, Any] = {"environment": "production", **defaults}
        plain = {
            "ENVIRONMENT": "environment",
            "DATABASE_URL": "database_url",
            "REDIS_URL": "redis_url",
            "BROKER_URL": "broker_url",
            "SMTP_URL": "smtp_url",
            "EMAIL_FROM": "email_from",
            "BASE_URL": "base_url",
            "SECRET_KEY": "secret_key",
            "SMS_URL": "sms_url",
            "LOG_FORMAT": "log_format",
            "DATA_DIR": "data_dir",
            "REDIS_NAMESPACE": "redis_namespace",
        }
        for var, field in plain.items():
            if environ.get(var):
                values[field] = environ[var]
        if environ.get("BASE_URL"):
            values["base_url"] = environ["BASE_URL"].rstrip("/")
        converters: dict[str, tuple[str, Callable[[str], Any]]] = {
            "PORT": ("port", int),
            "EMAIL_RATE": ("email_rate", float),
            "REINSTATEMENT_WINDOW": ("reinstatement_window", parse_duration),
        }
        for var, (field, convert) in converters.items():
            if environ.get(var):
                try:
                    values[field] = convert(environ[var])
                except ValueError as err:
                    raise SettingsError(var, str(err)) from None
        return cls(**values)
