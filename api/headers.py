"""Security headers on every answer (pages, API, static files, error pages).

Set in `on_response_prepare`, the last moment before the headers go out, so that aiohttp's own
answers (404 pages, redirects, static files) carry them too. A response that sets its own
`Content-Security-Policy` or `X-Frame-Options` (the dev mailbox's HTML part) keeps it.
"""

from __future__ import annotations

from aiohttp import web

from api.keys import SETTINGS

# Scripts and styles only from files of this site (api/static): no inline code at all. The TOTP
# QR code is inline SVG markup (no request); the recovery codes' download link is a data: URL.
CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)
HSTS = "max-age=31536000; includeSubDomains"
# Without a version: aiohttp's default names Python's and its own.
SERVER = "require2fa"


def setup(app: web.Application) -> None:
    fixed = {
        "X-Content-Type-Options": "nosniff",
        # Accept links carry tokens in their path: never send them to another site as Referer.
        "Referrer-Policy": "same-origin",
        "Server": SERVER,
    }
    if app[SETTINGS].base_url.startswith("https://"):
        fixed["Strict-Transport-Security"] = HSTS

    async def add_security_headers(_request: web.Request, response: web.StreamResponse) -> None:
        headers = response.headers
        headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        headers.setdefault("X-Frame-Options", "DENY")
        headers.update(fixed)

    app.on_response_prepare.append(add_security_headers)
