"""The backup phone: numbers, codes in Redis, and the SMS gateway (a real HTTPS server)."""

from __future__ import annotations

import asyncio
import ipaddress
import ssl
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis.asyncio as aioredis
import structlog
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from structlog.testing import capture_logs

from require2fa import sms


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("+14155550123", "+14155550123"),
        ("+44 20 7946 0958", "+442079460958"),
        ("+1 (415) 555-0123", "+14155550123"),
        ("4155550123", None),
        ("+0123456789", None),
        ("+1234567890123456", None),
        ("+1415abc0123", None),
        ("", None),
    ],
)
def test_e164(text: str, expected: str | None) -> None:
    assert sms.normalize_phone(text) == expected


def test_mask_phone() -> None:
    assert sms.mask_phone("+14155550123") == "+1******0123"


async def test_code_works_once_and_expires_in_five_minutes(settings, redis_url) -> None:
    redis = aioredis.Redis.from_url(redis_url)
    code = sms.new_code()
    args: dict[str, Any] = {"purpose": "enroll", "user_id": 7, "binding": "+14155550123"}
    await sms.store_code(redis, settings, code=code, **args)
    key = f"{settings.redis_namespace}:sms-code:enroll:7"
    assert 0 < await redis.ttl(key) <= 300
    assert code.encode() not in await redis.get(key)  # stored as a keyed hash
    wrong = f"{(int(code) + 1) % 10**6:06d}"
    assert not await sms.take_code(redis, settings, code=wrong, **args)
    assert not await sms.take_code(
        redis, settings, code=code, **{**args, "binding": "+14155550124"}
    )
    results = await asyncio.gather(
        *(sms.take_code(redis, settings, code=code, **args) for _ in range(5))
    )
    assert sorted(results) == [False, False, False, False, True]
    assert not await sms.take_code(redis, settings, code=code, **args)
    await redis.aclose()


async def test_console_logs_the_message(settings, monkeypatch) -> None:
    # A logger that an earlier test used is cached with the processes' configuration, which
    # `capture_logs` cannot reach: this test logs through a fresh one.
    monkeypatch.setattr(sms, "log", structlog.get_logger(sms.__name__))
    with capture_logs() as logs:
        await sms.send(settings, "+14155550123", "Your code is 123456.")
    assert {"event": "sms.console", "to": "+14155550123", "body": "Your code is 123456."} in [
        {k: entry.get(k) for k in ("event", "to", "body")} for entry in logs
    ]


def _tls_pair(tmp_path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A self-signed certificate for 127.0.0.1: the server's context and a client trusting it."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert_file, key_file)
    client = ssl.create_default_context(cafile=str(cert_file))
    return server, client


async def test_https_gateway_gets_a_json_post(aiohttp_server, settings, tmp_path) -> None:
    received: list[dict] = []
    never = asyncio.Event()

    async def gateway(request: web.Request) -> web.Response:
        received.append(await request.json())
        return web.json_response({"ok": True})

    async def broken(request: web.Request) -> web.Response:
        return web.json_response({"error": "nope"}, status=500)

    async def stuck(request: web.Request) -> web.Response:
        await never.wait()
        return web.Response()

    app = web.Application()
    app.router.add_post("/sms", gateway)
    app.router.add_post("/broken", broken)
    app.router.add_post("/stuck", stuck)
    server_tls, client_tls = _tls_pair(tmp_path)
    server = await aiohttp_server(app, ssl=server_tls)
    base = str(server.make_url("/"))
    assert base.startswith("https://127.0.0.1:")

    await sms.send(
        settings.replace(sms_url=base + "sms"), "+14155550123", "hi", ssl_context=client_tls
    )
    assert received == [{"to": "+14155550123", "body": "hi"}]

    with pytest.raises(sms.SmsError):
        await sms.send(
            settings.replace(sms_url=base + "broken"), "+1415555", "x", ssl_context=client_tls
        )
    with pytest.raises(sms.SmsError):
        await sms.send(
            settings.replace(sms_url=base + "stuck"),
            "+14155550123",
            "x",
            ssl_context=client_tls,
            time_limit=0.2,
        )
    # Without trusting the certificate the connection is refused, never sent in the clear.
    with pytest.raises(sms.SmsError):
        await sms.send(settings.replace(sms_url=base + "sms"), "+14155550123", "hi")
    assert len(received) == 1
    never.set()
