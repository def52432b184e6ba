"""Durations (`REINSTATEMENT_WINDOW` and the retentions: a number with an `s`, `m`, `h` or `d`
unit), without a database."""

from __future__ import annotations

from datetime import timedelta

import pytest

from require2fa.settings import Settings, SettingsError, parse_duration


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90d", timedelta(days=90)),
        ("1d", timedelta(days=1)),
        ("36h", timedelta(hours=36)),
        ("90m", timedelta(minutes=90)),
        ("1s", timedelta(seconds=1)),
        ("3600s", timedelta(hours=1)),
        (" 7d ", timedelta(days=7)),
        ("7 d", timedelta(days=7)),
        ("007d", timedelta(days=7)),
    ],
)
def test_a_duration_and_its_unit(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    "text", ["", "d", "1.5d", "-1d", "1w", "90D", "1d2h", "three months", "P90D", "1 d s"]
)
def test_what_is_not_a_duration(text: str) -> None:
    with pytest.raises(ValueError) as err:
        parse_duration(text)
    assert "is not a duration such as 90d" in str(err.value)


@pytest.mark.parametrize("text", ["90", "0", " 45 "])
def test_a_bare_number_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="has no unit"):
        parse_duration(text)


@pytest.mark.parametrize("text", ["0d", "0s"])
def test_a_duration_is_longer_than_zero(text: str) -> None:
    with pytest.raises(ValueError, match="longer than zero"):
        parse_duration(text)


def test_the_reinstatement_window_setting() -> None:
    development = {"ENVIRONMENT": "development"}
    assert Settings.from_env(development).reinstatement_window == timedelta(days=90)
    chosen = Settings.from_env({**development, "REINSTATEMENT_WINDOW": "30d"})
    assert chosen.reinstatement_window == timedelta(days=30)
    # An empty value is no value: the default.
    unset = Settings.from_env({**development, "REINSTATEMENT_WINDOW": ""})
    assert unset.reinstatement_window == timedelta(days=90)
    with pytest.raises(SettingsError) as err:
        Settings.from_env({**development, "REINSTATEMENT_WINDOW": "3 months"})
    assert str(err.value) == (
        "REINSTATEMENT_WINDOW: '3 months' is not a duration such as 90d, 12h, 30m or 2s"
    )
