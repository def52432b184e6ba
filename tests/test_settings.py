"""Settings: read once from the environment, refused with one line naming the variable."""

from __future__ import annotations

from datetime import timedelta

import pytest

from require2fa.settings import DEV_SECRET_KEY, Settings, SettingsError, parse_duration

PROD = {
    "SECRET_KEY": "s" * 40,
    "BASE_URL": "https://require2fa.example.com",
    "SMTP_URL": "smtp://mail.example.com:587?starttls=1",
}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90d", timedelta(days=90)),
        ("2s", timedelta(seconds=2)),
        ("12h", timedelta(hours=12)),
        ("30m", timedelta(minutes=30)),
        (" 45s ", timedelta(seconds=45)),
    ],
)
def test_durations(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("bare", ["90", "7776000", " 90 "])
def test_a_duration_without_a_unit_is_refused(bare: str) -> None:
    """`REINSTATEMENT_WINDOW=90` used to mean 90 seconds; now it stops the process, saying why."""
    with pytest.raises(SettingsError) as err:
        Settings.from_env({**PROD, "REINSTATEMENT_WINDOW": bare})
    number = bare.strip()
    assert str(err.value) == (
        f"REINSTATEMENT_WINDOW: {number!r} has no unit: write {number}d, {number}h, {number}m "
        f"or {number}s"
    )


def test_smtp_url_is_required_outside_development() -> None:
    without = {key: value for key, value in PROD.items() if key != "SMTP_URL"}
    with pytest.raises(SettingsError) as err:
        Settings.from_env(without)
    assert err.value.variable == "SMTP_URL"
    assert str(err.value).startswith("SMTP_URL: must be set outside development")
    assert "\n" not in str(err.value)
    # Commands that send no email need none; development keeps its local default.
    assert Settings.from_env(without, needs=frozenset({"SECRET_KEY"})).smtp_url == ""
    assert Settings.from_env({"ENVIRONMENT": "development"}).smtp.port == 1025


def test_worker_nice_is_read() -> None:
    assert Settings.from_env(PROD).worker_nice == 0
    assert Settings.from_env({**PROD, "WORKER_NICE": "10"}).worker_nice == 10


def test_metrics_token_is_read() -> None:
    assert Settings.from_env(PROD).metrics_token == ""
    assert Settings.from_env({**PROD, "METRICS_TOKEN": "abc"}).metrics_token == "abc"


def test_defaults_in_production_with_a_secret() -> None:
    settings = Settings.from_env(PROD)
    assert settings.environment == "production"
    assert settings.reinstatement_window == timedelta(days=90)
    assert settings.port == 8000


def test_default_secret_refused_outside_development() -> None:
    with pytest.raises(SettingsError) as err:
        Settings.from_env({})
    assert err.value.variable == "SECRET_KEY"
    assert Settings.from_env({"ENVIRONMENT": "development"}).secret_key == DEV_SECRET_KEY


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("REINSTATEMENT_WINDOW", "three months"),
        ("REINSTATEMENT_WINDOW", "0d"),
        ("PORT", "eighty"),
        ("PORT", "70000"),
        ("SMTP_URL", "http://mail.example.com"),
        ("SMTP_URL", "smtp://host:notaport"),
        ("DATABASE_URL", "mysql://db/x"),
        ("REDIS_URL", "http://localhost"),
        ("BROKER_URL", "kafka://localhost:9092"),
        ("LOG_FORMAT", "xml"),
        ("BASE_URL", "example.com"),
        ("SMS_URL", "http://insecure.example.com"),
        ("EMAIL_RATE", "-1"),
        ("WORKER_NICE", "20"),
        ("WORKER_NICE", "-5"),
        ("ENVIRONMENT", "staging"),
        ("SECRET_KEY", "short"),
    ],
)
def test_bad_values_name_their_variable(variable: str, value: str) -> None:
    with pytest.raises(SettingsError) as err:
        Settings.from_env({**PROD, variable: value})
    assert err.value.variable == variable
    assert str(err.value).startswith(f"{variable}: ")
    assert "\n" not in str(err.value)


def test_smtp_url_forms() -> None:
    plain = Settings.from_env({**PROD, "SMTP_URL": "smtp://u:p@mail:2525?starttls=1"}).smtp
    assert (plain.host, plain.port, plain.username, plain.password) == ("mail", 2525, "u", "p")
    assert plain.start_tls and not plain.use_tls
    encoded = Settings.from_env({**PROD, "SMTP_URL": "smtp://me%40corp:p%25ss%3A@mail"}).smtp
    assert (encoded.username, encoded.password) == ("me@corp", "p%ss:")
    implicit = Settings.from_env({**PROD, "SMTP_URL": "smtps://mail"}).smtp
    assert implicit.use_tls and implicit.port == 465


def test_base_url_is_required_outside_development() -> None:
    with pytest.raises(SettingsError) as err:
        Settings.from_env({"SECRET_KEY": "s" * 40, "SMTP_URL": "smtp://mail"})
    assert err.value.variable == "BASE_URL"
    assert str(err.value).startswith("BASE_URL: must be set outside development")
    # What only touches the database needs neither BASE_URL nor SECRET_KEY.
    assert Settings.from_env({}, needs=frozenset()).base_url == ""
    # Development: one URL that works, on the port.
    assert Settings.from_env({"ENVIRONMENT": "development", "PORT": "8001"}).base_url == (
        "http://localhost:8001"
    )


def test_allowed_origins() -> None:
    prod = Settings.from_env({**PROD, "BASE_URL": "https://Require2FA.example.com/"})
    assert prod.allowed_origins == {"https://require2fa.example.com"}
    dev = Settings(environment="development", port=8000)
    assert dev.allowed_origins == {
        "http://localhost:8000",
        "http://127.0.0.1:8000",
        "http://[::1]:8000",
    }
    # A loopback BASE_URL outside development is taken as it is.
    local_prod = Settings.from_env({**PROD, "BASE_URL": "http://127.0.0.1:8000"})
    assert local_prod.allowed_origins == {"http://127.0.0.1:8000"}
    dev_named = Settings(environment="development", base_url="http://dev.example:8000")
    assert dev_named.allowed_origins == {"http://dev.example:8000"}


def test_port_says_what_it_got() -> None:
    with pytest.raises(SettingsError) as err:
        Settings.from_env({**PROD, "PORT": "abc"})
    assert str(err.value) == "PORT: 'abc' is not a TCP port number (1-65535)"


def test_broker_url_selects_the_broker() -> None:
    from dramatiq.brokers.rabbitmq import RabbitmqBroker
    from dramatiq.brokers.redis import RedisBroker

    from jobs.broker import broker_url, build_broker

    amqp = "amqp://guest:guest@127.0.0.1:5672/prod"
    assert Settings.from_env({**PROD, "BROKER_URL": amqp}).broker_url == amqp
    assert broker_url({"REDIS_URL": "redis://r:6379/1"}) == "redis://r:6379/1"
    assert broker_url({"REDIS_URL": "redis://r:6379/1", "BROKER_URL": amqp}) == amqp
    rabbit = build_broker(amqp, "ns", middleware=[])
    assert isinstance(rabbit, RabbitmqBroker) and rabbit.confirm_delivery
    assert rabbit.parameters.heartbeat == 15 and rabbit.parameters.virtual_host == "prod"
    chosen = build_broker(amqp + "?heartbeat=5", "ns", middleware=[])
    assert isinstance(chosen, RabbitmqBroker) and chosen.parameters.heartbeat == 5
    assert isinstance(build_broker("redis://127.0.0.1:6379/0", "ns", middleware=[]), RedisBroker)


def test_trusted_proxies() -> None:
    from require2fa.settings import Settings, SettingsError

    assert Settings.from_env({"ENVIRONMENT": "development"}).trusted_proxies == ()
    read = Settings.from_env(
        {"ENVIRONMENT": "development", "TRUSTED_PROXIES": "10.0.0.1, 10.1.0.0/16,::1"}
    )
    assert read.trusted_proxies == ("10.0.0.1/32", "10.1.0.0/16", "::1/128")
    assert len(read.trusted_networks) == 3
    with pytest.raises(SettingsError) as err:
        Settings.from_env({"ENVIRONMENT": "development", "TRUSTED_PROXIES": "10.0.0.1,proxy"})
    assert str(err.value).startswith("TRUSTED_PROXIES:")
    with pytest.raises(SettingsError):
        Settings(trusted_proxies=("nonsense",))
