"""One `Settings` object, read from the environment once and passed to whoever needs it."""

from __future__ import annotations

import dataclasses
import functools
import ipaddress
import re
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

DEV_SECRET_KEY = "development-only-secret-key-do-not-use-in-production"
# What a long-running process (web, worker, clock) needs outside development. Commands that only
# touch the database (migrate, status, ...) ask for less: `Settings.from_env(env, needs=...)`.
SERVER_NEEDS = frozenset({"SECRET_KEY", "BASE_URL", "SMTP_URL"})
# Where mail goes in development when SMTP_URL is unset (`require2fa dev` points it at its sink).
DEV_SMTP_URL = "smtp://127.0.0.1:1025"
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]")
_DURATION = re.compile(r"^\s*(\d+)\s*([smhd])\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class SettingsError(ValueError):
    """A setting is missing or malformed; `str(err)` is one line naming the variable."""

    def __init__(self, variable: str, problem: str) -> None:
        super().__init__(f"{variable}: {problem}")
        self.variable = variable


def parse_networks(text: str) -> tuple[str, ...]:
    """`TRUSTED_PROXIES`: comma-separated addresses or networks (`10.0.0.1, 10.1.0.0/16, ::1`)."""
    found = []
    for part in text.split(","):
        if part.strip():
            try:
                found.append(str(ipaddress.ip_network(part.strip(), strict=False)))
            except ValueError:
                raise ValueError(f"{part.strip()!r} is not an IP address or network") from None
    return tuple(found)


def _port(text: str) -> int:
    if not text.strip().isdigit():
        raise ValueError(f"{text!r} is not a TCP port number (1-65535)")
    return int(text)


def _niceness(text: str) -> int:
    if not text.strip().isdigit() or int(text) > 19:
        raise ValueError(f"{text!r} is not a niceness from 0 to 19")
    return int(text)


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a number") from None


def _is_origin_url(url: str) -> bool:
    parts = urlsplit(url)
    try:
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def _check_url(variable: str, url: str, schemes: tuple[str, ...], expected: str) -> None:
    """`url` is one of `schemes` and can be read: a bracket left open or a port that is not a
    number is this line now, not a library's traceback when a connection is first made."""
    try:
        parts = urlsplit(url)
        if "," not in parts.netloc:  # libpq's host1:port1,host2:port2 has no single port
            parts.port  # noqa: B018 - raises on a port that is not a number in 0-65535
    except ValueError as err:
        raise SettingsError(variable, f"cannot be read as a URL ({err})") from None
    if parts.scheme not in schemes:
        raise SettingsError(variable, f"must be {expected} URL")


def parse_duration(text: str) -> timedelta:
    """`90d`, `12h`, `30m` or `2s`. A bare number is refused: `90` meant seconds once, and
    nobody who wrote it for a window of days wanted that."""
    if text.strip().isdigit():
        raise ValueError(
            f"{text.strip()!r} has no unit: write {text.strip()}d, {text.strip()}h, "
            f"{text.strip()}m or {text.strip()}s"
        )
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a duration such as 90d, 12h, 30m or 2s")
    seconds = int(match.group(1)) * _UNITS[match.group(2)]
    if seconds <= 0:
        raise ValueError("must be longer than zero")
    return timedelta(seconds=seconds)


def parse_retention(text: str) -> timedelta:
    """A retention: a duration with its unit (`30d`, `12h`); `0` keeps everything (a zero
    `timedelta`)."""
    if text.strip() == "0":
        return timedelta(0)
    return parse_duration(text)


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
    # Required outside development (by the processes whose `needs` name it); in development
    # DEV_SMTP_URL.
    smtp_url: str = ""
    email_from: str = "require2fa <no-reply@require2fa.localhost>"
    email_rate: float = 100.0
    # How much a worker process lowers its CPU priority at boot (`nice`, 0-19): on a host that
    # also runs the web process, the requests people wait on then go before the bulk work of a
    # large run (docs/SCALING.md). 0: as the process was started.
    worker_nice: int = 0
    # Where people reach this service (email links, the origin forms must come from).
    # Required outside development; in development `http://localhost:{port}`.
    base_url: str = ""
    secret_key: str = DEV_SECRET_KEY
    port: int = 8000
    reinstatement_window: timedelta = timedelta(days=90)
    # Sent and failed email rows and finished webhook deliveries are deleted after this.
    outbox_retention: timedelta = timedelta(days=30)
    # Audit entries are kept this long, a month partition at a time; zero keeps everything.
    audit_retention: timedelta = timedelta(days=400)
    sms_url: str = "console:"
    log_format: str = "text"
    # The bearer token `GET /metrics` asks for. Unset: /metrics is 404 outside development, and
    # open in development (where nothing is worth hiding and a local Prometheus just scrapes).
    metrics_token: str = ""
    data_dir: str = ".require2fa"
    # The reverse proxies whose X-Forwarded-For / X-Forwarded-Proto are believed (addresses or
    # networks); nobody's by default, so the connecting address is the client's.
    trusted_proxies: tuple[str, ...] = ()
    # Prefix for every Redis key we own (queues, rate limits); lets test runs share one Redis.
    redis_namespace: str = "require2fa"
    # Which of SERVER_NEEDS this process must have outside development (see from_env).
    needs: frozenset[str] = dataclasses.field(default=SERVER_NEEDS, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.environment not in ("development", "production"):
            raise SettingsError("ENVIRONMENT", "must be development or production")
        if not 0 < self.port < 65536:
            raise SettingsError("PORT", "must be a TCP port number (1-65535)")
        if not self.base_url and self.environment == "development":
            object.__setattr__(self, "base_url", f"http://localhost:{self.port}")
        if not self.smtp_url and self.environment == "development":
            object.__setattr__(self, "smtp_url", DEV_SMTP_URL)
        if self.environment != "development":
            self._check_production()
        if len(self.secret_key) < 16:
            raise SettingsError("SECRET_KEY", "must be at least 16 characters long")
        if self.log_format not in ("json", "text"):
            raise SettingsError("LOG_FORMAT", "must be json or text")
        if self.base_url and not _is_origin_url(self.base_url):
            raise SettingsError(
                "BASE_URL", f"{self.base_url!r} is not an http:// or https:// address"
            )
        if not (self.sms_url == "console:" or self.sms_url.startswith("https://")):
            raise SettingsError("SMS_URL", "must be console: or an https:// URL")
        try:
            parse_networks(",".join(self.trusted_proxies))
        except ValueError as err:
            raise SettingsError("TRUSTED_PROXIES", str(err)) from None
        self._check_retention()
        if self.email_rate <= 0:
            raise SettingsError("EMAIL_RATE", "must be a positive number of emails per second")
        self._check_urls()

    def _check_retention(self) -> None:
        if self.outbox_retention <= timedelta(0):
            raise SettingsError("OUTBOX_RETENTION", "must be longer than zero")
        if timedelta(0) < self.audit_retention < self.outbox_retention:
            # A webhook delivery must not outlive the entry it sends.
            raise SettingsError("AUDIT_RETENTION", "must be 0 or at least OUTBOX_RETENTION")

    def _check_urls(self) -> None:
        """The service URLs have schemes we can use."""
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
            if url is not None:
                _check_url(name, url, schemes, expected)
        if self.smtp_url:
            try:
                parse_smtp_url(self.smtp_url)
            except ValueError as err:
                raise SettingsError("SMTP_URL", str(err)) from None

    def _check_production(self) -> None:
        """What a server needs outside development: a secret key, the address people open and
        the mail server."""
        if "SECRET_KEY" in self.needs and self.secret_key == DEV_SECRET_KEY:
            raise SettingsError("SECRET_KEY", "must be set outside development")
        if "BASE_URL" in self.needs and not self.base_url:
            raise SettingsError(
                "BASE_URL",
                "must be set outside development: the address people open, which email links "
                "use and forms must come from (e.g. https://require2fa.example.com)",
            )
        if "SMTP_URL" in self.needs and not self.smtp_url:
            raise SettingsError(
                "SMTP_URL",
                "must be set outside development: the server that sends the emails "
                "(smtp://user:pass@host:port, smtps://… for implicit TLS)",
            )

    @property
    def development(self) -> bool:
        return self.environment == "development"

    @property
    def secure_cookies(self) -> bool:
        return self.base_url.startswith("https://")

    @property
    def origin(self) -> str:
        """`scheme://host[:port]` of BASE_URL: what a browser sends as `Origin` from our pages."""
        parts = urlsplit(self.base_url)
        return f"{parts.scheme}://{parts.netloc}".lower()

    @functools.cached_property
    def allowed_origins(self) -> frozenset[str]:
        """The origins that forms and cookie-authenticated writes are accepted from: BASE_URL's;
        in development, when BASE_URL is a loopback address, each spelling of loopback on the
        same port too (localhost, 127.0.0.1, [::1]), since all of them reach the server."""
        parts = urlsplit(self.base_url)
        host = (parts.hostname or "").lower()
        if not self.development or f"[{host}]" not in LOOPBACK_HOSTS and host not in LOOPBACK_HOSTS:
            return frozenset({self.origin})
        port = f":{parts.port}" if parts.port else ""
        return frozenset({f"{parts.scheme}://{name}{port}" for name in LOOPBACK_HOSTS})

    @functools.cached_property
    def trusted_networks(self) -> tuple[Network, ...]:
        return tuple(ipaddress.ip_network(net, strict=False) for net in self.trusted_proxies)

    @property
    def smtp(self) -> SmtpTarget:
        if not self.smtp_url:
            raise SettingsError("SMTP_URL", "not set; sending email needs it")
        return parse_smtp_url(self.smtp_url)

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str],
        *,
        needs: frozenset[str] = SERVER_NEEDS,
        **defaults: Any,
    ) -> Settings:
        """Read the settings of the README's table; a bad one raises `SettingsError` naming it.

        Without `ENVIRONMENT=development` (which `require2fa dev`, `make demo` and the tests set)
        the process counts as production and needs a real `SECRET_KEY`, `BASE_URL` and
        `SMTP_URL` (those of them in `needs`: a command that only migrates needs none).
        """
        values: dict[str, Any] = {"environment": "production", "needs": needs, **defaults}
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
            "METRICS_TOKEN": "metrics_token",
            "REDIS_NAMESPACE": "redis_namespace",
        }
        for var, field in plain.items():
            if environ.get(var):
                values[field] = environ[var]
        if environ.get("BASE_URL"):
            values["base_url"] = environ["BASE_URL"].rstrip("/")
        converters: dict[str, tuple[str, Callable[[str], Any]]] = {
            "PORT": ("port", _port),
            "EMAIL_RATE": ("email_rate", _number),
            "WORKER_NICE": ("worker_nice", _niceness),
            "REINSTATEMENT_WINDOW": ("reinstatement_window", parse_duration),
            "OUTBOX_RETENTION": ("outbox_retention", parse_retention),
            "AUDIT_RETENTION": ("audit_retention", parse_retention),
            "TRUSTED_PROXIES": ("trusted_proxies", parse_networks),
        }
        for var, (field, convert) in converters.items():
            if environ.get(var):
                try:
                    values[field] = convert(environ[var])
                except ValueError as err:
                    raise SettingsError(var, str(err)) from None
        return cls(**values)
