"""Second-factor codes: TOTP (RFC 6238) over pyotp, secrets encrypted at rest, recovery codes.

TOTP: 160-bit base32 secrets, 6 digits, 30 s steps, one step of drift either way. Which step a
code matched is returned so that the caller can record it and refuse the same step again
(the replay guard lives in the database, see `db.authenticators.claim_totp_step`).

Secrets are stored as Fernet tokens under a key derived from SECRET_KEY for the purpose
"totp-secret" (`require2fa seed` writes its synthetic factors with the same key).

Recovery codes are random, so a keyed hash (HMAC-SHA256 under a key derived from SECRET_KEY)
is enough to store them: a leaked table does not let anyone test guesses offline.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from datetime import UTC, datetime

import pyotp
import segno
from cryptography.fernet import Fernet, InvalidToken

from require2fa.security import derive_key, fernet_key

ISSUER = "require2fa"
SECRET_PURPOSE = "totp-secret"
SECRET_LENGTH = 32  # base32 characters: 160 bits
DIGITS = 6
INTERVAL = 30
DRIFT_STEPS = 1
RECOVERY_CODE_COUNT = 10

_BASE32 = re.compile(r"^[A-Z2-7]+$")
_RECOVERY_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"  # no 0/o, 1/l/i to misread
_RECOVERY_LENGTH = 10  # ~49 bits each


def new_secret() -> str:
    return pyotp.random_base32(SECRET_LENGTH)


def normalize_secret(text: str) -> str | None:
    """The secret as we store it (upper case, no spaces), or None when it is not one of ours."""
    secret = re.sub(r"[\s-]", "", text).upper().rstrip("=")
    if len(secret) != SECRET_LENGTH or not _BASE32.match(secret):
        return None
    return secret


def _fernet(secret_key: str) -> Fernet:
    return Fernet(fernet_key(secret_key, SECRET_PURPOSE))


def encrypt_secret(secret_key: str, secret: str) -> bytes:
    return _fernet(secret_key).encrypt(secret.encode("ascii"))


def decrypt_secret(secret_key: str, stored: bytes | None) -> str | None:
    """The plain secret, or None when the stored value cannot be ours (other key, damaged)."""
    if not stored:
        return None
    try:
        return _fernet(secret_key).decrypt(bytes(stored)).decode("ascii")
    except (InvalidToken, UnicodeDecodeError, ValueError):
        return None


def otpauth_url(secret: str, account: str) -> str:
    """The `otpauth://totp/...` URL that authenticator apps scan (issuer and account name set)."""
    return pyotp.TOTP(secret, digits=DIGITS, interval=INTERVAL).provisioning_uri(
        name=account, issuer_name=ISSUER
    )


def qrcode_svg(url: str) -> str:
    """The URL as a QR code, an inline SVG document."""
    return segno.make(url, error="m", micro=False).svg_inline(scale=4, border=2)


def current_step(at: datetime | None = None) -> int:
    return int((at or datetime.now(UTC)).timestamp()) // INTERVAL


def code_at(secret: str, step: int) -> str:
    return pyotp.TOTP(secret, digits=DIGITS, interval=INTERVAL).generate_otp(step)


def matching_step(secret: str, code: str, at: datetime | None = None) -> int | None:
    """The time step (now, or one either side) whose code is `code`; None when none is."""
    code = code.strip()
    if len(code) != DIGITS or not code.isdigit():
        return None
    totp = pyotp.TOTP(secret, digits=DIGITS, interval=INTERVAL)
    now = totp.timecode(at or datetime.now(UTC))
    found = None
    for step in range(now - DRIFT_STEPS, now + DRIFT_STEPS + 1):
        # Look at every step (no early exit) so that the time taken does not tell which matched.
        if hmac.compare_digest(totp.generate_otp(step), code):
            found = step
    return found


# --- Recovery codes -----------------------------------------------------------------------


def new_recovery_codes(count: int = RECOVERY_CODE_COUNT) -> list[str]:
    """Fresh codes as shown to the user: `xxxxx-xxxxx`."""
    codes = []
    for _ in range(count):
        raw = "".join(secrets.choice(_RECOVERY_ALPHABET) for _ in range(_RECOVERY_LENGTH))
        codes.append(f"{raw[:5]}-{raw[5:]}")
    return codes


def normalize_recovery_code(text: str) -> str | None:
    """What a typed code means (case, spaces and dashes ignored), or None if it cannot be one."""
    code = re.sub(r"[\s-]", "", text).lower()
    if len(code) != _RECOVERY_LENGTH or any(c not in _RECOVERY_ALPHABET for c in code):
        return None
    return code


def recovery_code_hash(secret_key: str, code: str) -> bytes:
    """The stored form of a (normalized) recovery code."""
    key = derive_key(secret_key, "recovery-code")
    return hmac.new(key, code.encode("ascii"), hashlib.sha256).digest()
