"""TOTP codes, encrypted secrets and recovery codes (no services needed)."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, unquote, urlsplit

import pyotp
from cryptography.fernet import Fernet

from require2fa import totp
from require2fa.security import fernet_key

KEY = "k" * 40
AT = datetime(2024, 5, 1, 12, 0, 10, tzinfo=UTC)


def test_secret_is_160_bits_of_base32() -> None:
    secret = totp.new_secret()
    assert len(secret) == 32 and totp.normalize_secret(secret) == secret
    assert len(base64.b32decode(secret)) == 20
    assert totp.normalize_secret(" " + secret.lower()[:16] + " " + secret[16:]) == secret
    assert totp.normalize_secret("not-a-secret") is None
    assert totp.normalize_secret(secret[:-1] + "1") is None


def test_codes_match_their_step_with_one_step_of_drift() -> None:
    secret = totp.new_secret()
    now = totp.current_step(AT)
    for offset in (-1, 0, 1):
        code = totp.code_at(secret, now + offset)
        assert totp.matching_step(secret, code, AT) == now + offset
    assert totp.matching_step(secret, totp.code_at(secret, now + 2), AT) is None
    assert totp.matching_step(secret, totp.code_at(secret, now - 2), AT) is None
    assert totp.matching_step(secret, "12345", AT) is None
    assert totp.matching_step(secret, "abcdef", AT) is None
    # The same as any RFC 6238 app computes.
    assert pyotp.TOTP(secret).at(AT) == totp.code_at(secret, now)
    assert totp.current_step(AT + timedelta(seconds=30)) == now + 1


def test_secret_encrypted_at_rest_and_compatible_with_seed() -> None:
    secret = totp.new_secret()
    stored = totp.encrypt_secret(KEY, secret)
    assert secret.encode() not in stored
    assert totp.decrypt_secret(KEY, stored) == secret
    assert totp.decrypt_secret("other" * 8, stored) is None
    assert totp.decrypt_secret(KEY, b"x") is None
    assert totp.decrypt_secret(KEY, None) is None
    # `require2fa seed` encrypts its synthetic secret this way.
    seeded = Fernet(fernet_key(KEY, "totp-secret")).encrypt(b"JBSWY3DPEHPK3PXP")
    assert totp.decrypt_secret(KEY, seeded) == "JBSWY3DPEHPK3PXP"


def test_otpauth_url_and_qr_code() -> None:
    secret = totp.new_secret()
    url = totp.otpauth_url(secret, "ada@example.com")
    parts = urlsplit(url)
    assert parts.scheme == "otpauth" and parts.netloc == "totp"
    assert unquote(parts.path) == "/require2fa:ada@example.com"
    query = parse_qs(parts.query)
    assert query["secret"] == [secret] and query["issuer"] == ["require2fa"]
    assert pyotp.parse_uri(url).secret == secret
    svg = totp.qrcode_svg(url)
    assert svg.startswith("<svg") and svg.rstrip().endswith("</svg>")


def test_recovery_codes() -> None:
    codes = totp.new_recovery_codes()
    assert len(codes) == 10 and len(set(codes)) == 10
    for code in codes:
        assert len(code) == 11 and code[5] == "-"
        normal = totp.normalize_recovery_code(code)
        assert normal == code.replace("-", "")
        assert totp.normalize_recovery_code(" " + code.upper() + " ") == normal
    assert totp.normalize_recovery_code("123456") is None
    one = totp.normalize_recovery_code(codes[0])
    assert one is not None
    assert totp.recovery_code_hash(KEY, one) == totp.recovery_code_hash(KEY, one)
    assert totp.recovery_code_hash(KEY, one) != totp.recovery_code_hash("other" * 8, one)
