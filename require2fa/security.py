"""Secrets: random tokens, their stored hashes, password hashes and keys derived from SECRET_KEY."""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import secrets
from collections.abc import Sequence

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

_hasher = PasswordHasher()  # argon2id with the library's current recommended parameters
# A valid hash of a random password, verified against when the account does not exist, so that
# a missing account costs as much time as a wrong password.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


def new_token() -> str:
    """A URL-safe random token (256 bits)."""
    return secrets.token_urlsafe(32)


def new_tokens(count: int) -> list[str]:
    """`count` tokens like `new_token`'s, from one read of the system's random source (a batch
    of removals needs a token per member; each read costs a system call)."""
    raw = secrets.token_bytes(32 * count)
    return [
        base64.urlsafe_b64encode(raw[start : start + 32]).rstrip(b"=").decode("ascii")
        for start in range(0, 32 * count, 32)
    ]


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


@functools.lru_cache(maxsize=16)
def _aead(secret_key: str, purpose: str) -> AESGCM:
    return AESGCM(derive_key(secret_key, purpose))


def seal(secret_key: str, purpose: str, text: str) -> str:
    """`text` encrypted and authenticated (AES-256-GCM, a random nonce) under the key for
    `purpose`, as URL-safe base64: for secrets that must be read back, such as the accept link
    an outbox row keeps until its email is sent."""
    return seal_each(secret_key, purpose, [text])[0]


def seal_each(secret_key: str, purpose: str, texts: Sequence[str]) -> list[str]:
    """`seal` of each text, each under its own random nonce, the nonces drawn from one read of
    the system's random source."""
    aead, associated = _aead(secret_key, purpose), purpose.encode()
    nonces = secrets.token_bytes(12 * len(texts))
    sealed = []
    for n, text in enumerate(texts):
        nonce = nonces[12 * n : 12 * n + 12]
        box = nonce + aead.encrypt(nonce, text.encode(), associated)
        sealed.append(base64.urlsafe_b64encode(box).decode("ascii"))
    return sealed


def unseal(secret_key: str, purpose: str, sealed: str) -> str:
    """The text `seal` sealed; raises `ValueError` when it was sealed under another key or
    purpose, or altered."""
    try:
        raw = base64.urlsafe_b64decode(sealed.encode("ascii"))
        opened = _aead(secret_key, purpose).decrypt(raw[:12], raw[12:], purpose.encode())
    except (ValueError, InvalidTag) as err:
        raise ValueError("cannot open a sealed value (another SECRET_KEY?)") from err
    return opened.decode()
