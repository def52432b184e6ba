"""The compliance rules without a database: which factor kinds each level accepts (CONTRACT §9),
exemptions, the factor masks, and the SQL text that the statements embed. That the SQL says
the same as the Python check when PostgreSQL evaluates it is tests/test_compliance.py's."""

from __future__ import annotations

import itertools
import re
from datetime import UTC, datetime, timedelta

import pytest

from require2fa import compliance

# CONTRACT §9: `any`: TOTP, SMS or WebAuthn; `secure`: TOTP or WebAuthn; `phishing-resistant`:
# WebAuthn only. Recovery codes never count.
ACCEPTED = {
    "any": {"totp", "sms", "webauthn"},
    "secure": {"totp", "webauthn"},
    "phishing-resistant": {"webauthn"},
}
KINDS = ("totp", "sms", "webauthn", "recovery")
# Every set of confirmed factor kinds a user can have.
FACTOR_SETS = [
    set(kinds) for n in range(len(KINDS) + 1) for kinds in itertools.combinations(KINDS, n)
]
NOW = datetime(2026, 6, 1, 12, tzinfo=UTC)
# (exempt_until, whether the exemption is running at NOW)
EXEMPTIONS = [
    (None, False),
    (NOW + timedelta(days=1), True),
    (NOW - timedelta(seconds=1), False),
    (NOW, False),
]


def test_the_levels_are_the_contracts() -> None:
    assert {level: set(kinds) for level, kinds in compliance.LEVELS.items()} == ACCEPTED
    assert compliance.DEFAULT_LEVEL == "any"
    assert list(compliance.LEVELS) == ["any", "secure", "phishing-resistant"]


@pytest.mark.parametrize("level", [None, *ACCEPTED])
@pytest.mark.parametrize("kinds", FACTOR_SETS, ids=lambda kinds: "+".join(sorted(kinds)) or "none")
@pytest.mark.parametrize(("exempt_until", "exempt"), EXEMPTIONS)
def test_meets_requirement_for_each_level_factor_set_and_exemption(
    level: str | None, kinds: set[str], exempt_until: datetime | None, exempt: bool
) -> None:
    has_accepted_kind = bool(kinds & ACCEPTED[level or "any"])
    assert compliance.meets_requirement(kinds, level, exempt_until, NOW) is (
        has_accepted_kind or exempt
    )
    # Without `now` an exemption decides nothing.
    assert compliance.meets_requirement(kinds, level, exempt_until) is has_accepted_kind
    # The factor mask that the maintained counts keep answers the same without an exemption.
    mask = compliance.factor_mask(kinds)
    assert (mask & compliance.level_bits(level) != 0) is has_accepted_kind


def test_factor_bits() -> None:
    bits = [compliance.factor_bit(kind) for kind in compliance.FACTOR_KINDS]
    assert bits == [1 << i for i in range(len(compliance.FACTOR_KINDS))]
    assert compliance.factor_bit("recovery") == 0
    assert compliance.factor_mask([]) == 0
    assert compliance.factor_mask(["totp", "totp", "recovery"]) == compliance.factor_bit("totp")


def test_counts_one_factor() -> None:
    for level, accepted in ACCEPTED.items():
        for kind in KINDS:
            assert compliance.counts(kind, level) is (kind in accepted), (level, kind)
    assert not compliance.counts("recovery")


def test_levels_in_order_of_strictness() -> None:
    assert compliance.is_stricter("secure", "any")
    assert compliance.is_stricter("phishing-resistant", None)
    assert not compliance.is_stricter("any", "secure")
    assert not compliance.is_stricter(None, "any")
    assert compliance.level_of(None) == "any"
    with pytest.raises(ValueError):
        compliance.level_of("strong")
    for level in ACCEPTED:
        assert compliance.needs(level)
    assert "backup phone does not count" in compliance.needs("secure")


def _arms(sql: str) -> dict[str, str]:
    """`when 'level' then …` arms of a `case` the level SQL renders."""
    return dict(re.findall(r"when '([a-z-]+)' then (.+?)(?= when | else )", sql))


def test_the_level_sql_accepts_the_levels_kinds() -> None:
    sql = compliance.second_factor_sql("m.user_id", level_sql="o.require_2fa_level")
    assert sql.startswith("exists (select 1 from authenticators a where a.user_id = m.user_id")
    assert "a.confirmed_at is not null" in sql
    assert "coalesce(o.require_2fa_level, 'any')" in sql
    arms = _arms(sql)
    assert set(arms) == set(ACCEPTED)
    for level, accepted in ACCEPTED.items():
        listed = set(re.findall(r"'([a-z]+)'", arms[level]))
        assert listed == accepted, level
    # Without a level: any kind that counts.
    plain = compliance.factor_counts_sql("x")
    assert plain == "x.confirmed_at is not null and x.type in ('totp', 'sms', 'webauthn')"
    assert plain.replace("x.", "") == compliance.INDEX_PREDICATE


def test_the_level_bits_sql_agrees_with_level_bits() -> None:
    sql = compliance.level_bits_sql("l.level")
    assert "coalesce(l.level, 'any')" in sql and sql.endswith("else 0 end)")
    assert {level: int(bits) for level, bits in _arms(sql).items()} == {
        level: compliance.level_bits(level) for level in ACCEPTED
    }


def test_noncompliant_sql_is_neither_exempt_nor_with_a_factor() -> None:
    factor = compliance.second_factor_sql("u.id", level_sql="$2::text")
    noncompliant = compliance.noncompliant_sql(
        "u.id", level_sql="$2::text", exempt_until_sql="m.exempt_2fa_until"
    )
    assert noncompliant == f"not coalesce(m.exempt_2fa_until > now(), false) and not {factor}"
    assert compliance.noncompliant_sql("u.id") == "not " + compliance.second_factor_sql("u.id")
    probe = compliance.second_factor_probe_sql("u.id")
    assert probe == compliance.second_factor_sql("u.id")[:-1] + " offset 0)"


@pytest.mark.parametrize("bad", ["u.id; drop table users", "1 or true", "u.id)", "", "U.ID"])
def test_sql_is_built_from_references_only(bad: str) -> None:
    for build in (
        lambda: compliance.second_factor_sql(bad),
        lambda: compliance.second_factor_sql("u.id", level_sql=bad),
        lambda: compliance.noncompliant_sql("u.id", exempt_until_sql=bad),
        lambda: compliance.factor_counts_sql(bad),
        lambda: compliance.level_bits_sql(bad),
    ):
        with pytest.raises(ValueError):
            build()
