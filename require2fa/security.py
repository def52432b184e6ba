"""Secrets: random tokens, their stored hashes, password hashes and keys derived from SECRET_KEY."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

_hasher = PasswordHasher()  # argon2id with the library's current recommended parameters
# A valid hash of a random password, verified against when the account does not exist, so that
# a missing account costs as much time as a wrong password.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


def new_token() -> str:
    """A URL-safe random token (256 bits)."""
    return secrets.token_urlsafe(32)


def token_hash(token: str) -> bytes:
    """What we store instead of a token: tokens are random, so a plain SHA-256 suffices."""
    # surrogateescape: a header that is not UTF-8 still hashes (to a token that matches nothing)
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()


def token_matches(token: str, stored: bytes | None) -> bool:
    """Constant-time comparison of a presented token with a stored hash."""
    return stored is not None and hmac.compare_digest(token_hash(token), bytes(stored))


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(stored: str | None, password: str) -> bool:
    try:
        return _hasher.verify(stored or _DUMMY_HASH, password) and stored is not None
    except (VerificationError, InvalidHashError):
        return False


def derive_key(secret_key: str, purpose: str, length: int = 32) -> bytes:
    """A key for one purpose (sessions, TOTP secrets, …) derived from SECRET_KEY with HKDF."""
    hkdf = HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=purpose.encode())
    return hkdf.derive(secret_key.encode())


def fernet_key(secret_key: str, purpose: str) -> bytes:
    return base64.urlsafe_b64encode(derive_key(secret_key, purpose))
