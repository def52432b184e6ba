"""A software security key for the tests: real P-256 keys (from `cryptography`), real CBOR, real
signatures, in the byte layouts of the WebAuthn specification (§6.1 authenticator data, §6.5
attestation object with the `none` format, §5.8.1 client data).

It answers the options our server sends the way a browser plus an authenticator would, as the
JSON a browser's `PublicKeyCredential.toJSON()` gives. Everything the server checks can be made
wrong on purpose: the origin, the RP id, the challenge, the counter, the signature.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import struct
from dataclasses import dataclass, field
from typing import Any

import cbor2
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

FLAG_UP = 0x01  # user present
FLAG_UV = 0x04  # user verified
FLAG_AT = 0x40  # attested credential data included


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass
class SoftKey:
    """One credential on one authenticator. `origin` is where the "browser" says it is."""

    origin: str = "http://testserver"
    rp_id: str | None = None  # None: the one the options name
    counter: int = 0
    counts: bool = True  # False: an authenticator that keeps no counter (always 0)
    credential_id: bytes = field(default_factory=lambda: os.urandom(16))
    private_key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )

    def cose_public_key(self) -> bytes:
        numbers = self.private_key.public_key().public_numbers()
        return cbor2.dumps(
            {
                1: 2,  # kty: EC2
                3: -7,  # alg: ES256
                -1: 1,  # crv: P-256
                -2: numbers.x.to_bytes(32, "big"),
                -3: numbers.y.to_bytes(32, "big"),
            }
        )

    def _client_data(self, kind: str, challenge: str, origin: str | None) -> bytes:
        return json.dumps(
            {
                "type": kind,
                "challenge": challenge,
                "origin": origin or self.origin,
                "crossOrigin": False,
            },
            separators=(",", ":"),
        ).encode()

    def _next_count(self) -> int:
        if not self.counts:
            return 0
        self.counter += 1
        return self.counter

    def create(
        self,
        public_key: dict[str, Any],
        *,
        origin: str | None = None,
        rp_id: str | None = None,
        challenge: str | None = None,
    ) -> dict[str, Any]:
        """The registration response to creation options (`{"publicKey": ...}`'s value)."""
        rp = rp_id or self.rp_id or public_key["rp"]["id"]
        client_data = self._client_data(
            "webauthn.create", challenge or public_key["challenge"], origin
        )
        attested = (
            bytes(16)  # AAGUID: zeros, as `none` attestation allows
            + struct.pack(">H", len(self.credential_id))
            + self.credential_id
            + self.cose_public_key()
        )
        auth_data = (
            hashlib.sha256(rp.encode()).digest()
            + bytes([FLAG_UP | FLAG_UV | FLAG_AT])
            + struct.pack(">I", self.counter)
            + attested
        )
        attestation = cbor2.dumps({"fmt": "none", "attStmt": {}, "authData": auth_data})
        return {
            "id": b64url(self.credential_id),
            "rawId": b64url(self.credential_id),
            "type": "public-key",
            "response": {
                "clientDataJSON": b64url(client_data),
                "attestationObject": b64url(attestation),
                "transports": ["usb"],
            },
            "clientExtensionResults": {},
            "authenticatorAttachment": "cross-platform",
        }

    def get(
        self,
        public_key: dict[str, Any],
        *,
        origin: str | None = None,
        rp_id: str | None = None,
        challenge: str | None = None,
        counter: int | None = None,
        tamper: bool = False,
    ) -> dict[str, Any]:
        """The authentication response to request options, signed with this key. `counter`
        forces the counter reported; `tamper` flips a bit of the signed data after signing."""
        rp = rp_id or self.rp_id or public_key["rpId"]
        client_data = self._client_data(
            "webauthn.get", challenge or public_key["challenge"], origin
        )
        count = self._next_count() if counter is None else counter
        auth_data = (
            hashlib.sha256(rp.encode()).digest()
            + bytes([FLAG_UP | FLAG_UV])
            + struct.pack(">I", count)
        )
        signed = auth_data + hashlib.sha256(client_data).digest()
        signature = self.private_key.sign(signed, ec.ECDSA(hashes.SHA256()))
        if tamper:
            auth_data = auth_data[:-1] + bytes([auth_data[-1] ^ 0x01])
        return {
            "id": b64url(self.credential_id),
            "rawId": b64url(self.credential_id),
            "type": "public-key",
            "response": {
                "clientDataJSON": b64url(client_data),
                "authenticatorData": b64url(auth_data),
                "signature": b64url(signature),
                "userHandle": None,
            },
            "clientExtensionResults": {},
            "authenticatorAttachment": "cross-platform",
        }
