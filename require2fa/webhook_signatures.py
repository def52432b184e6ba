"""What signs a webhook delivery (docs/SECURITY.md, Webhook signatures).

- The secret: `whsec_` and the base64 of 32 random bytes, shown once, stored encrypted under a
  key derived from SECRET_KEY. Secrets made before Standard Webhooks (`whsec_` and URL-safe
  base64 without padding) keep working: their key is the bytes that URL-safe base64 encodes.
- `X-Require2FA-Signature: sha256=<hex>`: HMAC-SHA256 of the raw body keyed with the whole
  secret string (the first form, unchanged).
- Standard Webhooks 1.0: `webhook-id` (the delivery's id), `webhook-timestamp` (Unix seconds of
  the attempt) and `webhook-signature: v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`
  keyed with the secret's decoded bytes; one `v1,` entry per secret that signs (the current
  one, and the one a rotation replaced during `ROTATION_OVERLAP`), space-separated.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from collections.abc import Sequence
from datetime import timedelta

from cryptography.fernet import Fernet, InvalidToken

from require2fa.security import fernet_key

SECRET_PURPOSE = "webhook-secret"
SECRET_PREFIX = "whsec_"
SIGNATURE_HEADER = "X-Require2FA-Signature"
EVENT_HEADER = "X-Require2FA-Event"
DELIVERY_HEADER = "X-Require2FA-Delivery"
ID_HEADER = "webhook-id"
TIMESTAMP_HEADER = "webhook-timestamp"
STANDARD_SIGNATURE_HEADER = "webhook-signature"
ROTATION_OVERLAP = timedelta(hours=24)  # the replaced secret still signs this long


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def _fernet(secret_key: str) -> Fernet:
    return Fernet(fernet_key(secret_key, SECRET_PURPOSE))


def encrypt_secret(secret: str, secret_key: str) -> bytes:
    return _fernet(secret_key).encrypt(secret.encode())


def decrypt_secret(stored: bytes, secret_key: str) -> str | None:
    """The secret, or None when it was encrypted under another SECRET_KEY."""
    try:
        return _fernet(secret_key).decrypt(bytes(stored)).decode()
    except InvalidToken:
        return None


def key_bytes(secret: str) -> bytes:
    """The HMAC key of `webhook-signature`: what the base64 after `whsec_` encodes (standard
    base64; a secret of the first form, URL-safe without padding, as URL-safe base64; anything
    else, which we never issued, as its UTF-8 bytes)."""
    encoded = secret.removeprefix(SECRET_PREFIX)
    try:
        return base64.b64decode(encoded, validate=True)
    except binascii.Error:
        pass
    try:
        return base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
    except (binascii.Error, ValueError):
        return secret.encode()


def signature(body: bytes, secret: str) -> str:
    """The `X-Require2FA-Signature` value: `sha256=` and the hex HMAC-SHA256 of the raw body."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def standard_signature(delivery_id: str, timestamp: int, body: bytes, secret: str) -> str:
    """One `v1,` entry of `webhook-signature`."""
    signed = f"{delivery_id}.{timestamp}.".encode() + body
    digest = hmac.new(key_bytes(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def headers(
    *, delivery_id: str, event: str, timestamp: int, body: bytes, signing: Sequence[str]
) -> dict[str, str]:
    """Every header that identifies and signs one attempt; `signing` holds the current secret
    first, then the one a rotation replaced while it still signs."""
    return {
        EVENT_HEADER: event,
        DELIVERY_HEADER: delivery_id,
        SIGNATURE_HEADER: signature(body, signing[0]),
        ID_HEADER: delivery_id,
        TIMESTAMP_HEADER: str(timestamp),
        STANDARD_SIGNATURE_HEADER: " ".join(
            standard_signature(delivery_id, timestamp, body, secret) for secret in signing
        ),
    }
