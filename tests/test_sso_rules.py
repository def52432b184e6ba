"""The rule that counts an identity provider's assertion (`amr`, `acr`) as a second factor."""

from __future__ import annotations

import pytest

from require2fa.compliance import idp_mfa_meets

CASES = [
    (["pwd"], None, "any", False),
    ([], None, "any", False),
    (None, None, None, False),
    (["pwd", "otp"], None, "any", True),
    (["mfa"], None, None, True),
    (["sms"], None, "any", True),
    (["face"], None, "any", True),
    (["sms"], None, "secure", False),
    (["pwd", "sms"], None, "secure", False),
    (["sms", "otp"], None, "secure", True),
    (["swk"], None, "secure", True),
    (["otp"], None, "phishing-resistant", False),
    (["mfa"], None, "phishing-resistant", False),
    (["hwk"], None, "phishing-resistant", True),
    (["pwd", "pop"], None, "phishing-resistant", True),
    (["pwd"], "phr", "phishing-resistant", True),
    ([], "phrh", "phishing-resistant", True),
    (["pwd"], "phr", "any", False),  # `any` and `secure` read `amr` only
    (["pwd"], "urn:example:password", "phishing-resistant", False),
]


@pytest.mark.parametrize(("amr", "acr", "level", "meets"), CASES)
def test_idp_mfa_meets_each_level(
    amr: list[str] | None, acr: str | None, level: str | None, meets: bool
) -> None:
    assert idp_mfa_meets(amr, acr, level) is meets


def test_a_stricter_level_never_accepts_what_a_laxer_one_refuses() -> None:
    for amr in (["pwd"], ["sms"], ["otp"], ["hwk"], ["pop", "sms"], ["fpt"]):
        results = [
            idp_mfa_meets(amr, None, level) for level in ("any", "secure", "phishing-resistant")
        ]
        assert results == sorted(results, reverse=True), amr


def test_an_unknown_level_is_an_error() -> None:
    with pytest.raises(ValueError, match="not a requirement level"):
        idp_mfa_meets(["mfa"], None, "strong")
