"""Every URL the web process answers, in one table. `openapi.json` is generated from it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web
from pydantic import BaseModel

from api import bodies
from api.handlers import (
    accounts,
    audit,
    authenticators,
    enforcement,
    health,
    invites,
    members,
    metrics,
    organizations,
    sso,
    webhooks,
)
from api.keys import OPENAPI
from api.pages import (
    accept,
    docs,
    home,
    org_audit,
    org_members,
    org_runs,
    org_sso,
    org_webhooks,
    sign_in,
    tokens,
)
from api.pages import account as account_pages
from api.pages import org_admin as org_pages
from api.pages import sso as sso_pages

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: Handler
    body: type[BaseModel] | None = None  # the JSON body it validates, for the OpenAPI document
    tag: str = "api"


API = "/api/0"
ORG = f"{API}/organizations/{{org}}"
ME = f"{API}/users/me"

ROUTES: list[Route] = [
    # Accounts and 2FA
    Route("POST", f"{API}/auth/register/", accounts.register, bodies.RegisterIn, "accounts"),
    Route("POST", f"{API}/auth/login/", accounts.login, bodies.LoginIn, "accounts"),
    Route("POST", f"{API}/auth/logout/", accounts.logout, tag="accounts"),
    Route("POST", f"{API}/auth/2fa/", accounts.second_factor, accounts.SecondFactorIn, "accounts"),
    Route("POST", f"{API}/auth/2fa/sms/", accounts.send_sms_code, tag="accounts"),
    Route("POST", f"{API}/auth/sudo/", accounts.sudo, accounts.SudoIn, "accounts"),
    Route(
        "POST",
        f"{API}/auth/sudo/webauthn/",
        accounts.sudo_webauthn_challenge,
        accounts.EmptyIn,
        "accounts",
    ),
    Route(
        "POST",
        f"{API}/auth/2fa/webauthn/",
        accounts.webauthn_challenge,
        accounts.EmptyIn,
        "accounts",
    ),
    Route("POST", f"{API}/api-tokens/", accounts.create_api_token, accounts.TokenIn, "accounts"),
    Route("GET", f"{API}/api-tokens/", accounts.list_api_tokens, tag="accounts"),
    Route("DELETE", f"{API}/api-tokens/{{id}}/", accounts.revoke_api_token, tag="accounts"),
    Route("GET", f"{API}/users/me/", accounts.me, tag="accounts"),
    Route("PUT", f"{ME}/password/", accounts.change_password, accounts.PasswordIn, "accounts"),
    Route("GET", f"{ME}/sessions/", accounts.list_sessions, tag="accounts"),
    Route("DELETE", f"{ME}/sessions/", accounts.end_other_sessions, tag="accounts"),
    Route("DELETE", f"{ME}/sessions/{{id}}/", accounts.end_session, tag="accounts"),
    Route("GET", f"{ME}/authenticators/", authenticators.list_authenticators, tag="2fa"),
    Route(
        "POST",
        f"{ME}/authenticators/totp/enroll/",
        authenticators.enroll_totp,
        authenticators.TotpEnrollIn,
        "2fa",
    ),
    Route(
        "POST",
        f"{ME}/authenticators/sms/enroll/",
        authenticators.enroll_sms,
        authenticators.SmsEnrollIn,
        "2fa",
    ),
    Route(
        "POST",
        f"{ME}/authenticators/webauthn/register/",
        authenticators.register_webauthn,
        authenticators.WebauthnRegisterIn,
        "2fa",
    ),
    Route(
        "POST",
        f"{ME}/authenticators/recovery/regenerate/",
        authenticators.regenerate_recovery_codes,
        tag="2fa",
    ),
    Route(
        "PUT",
        f"{ME}/authenticators/{{id}}/",
        authenticators.rename_authenticator,
        authenticators.RenameIn,
        "2fa",
    ),
    Route("DELETE", f"{ME}/authenticators/{{id}}/", authenticators.delete_authenticator, tag="2fa"),
    # Organizations, teams, members
    Route("GET", f"{API}/organizations/", organizations.list_organizations, tag="organizations"),
    Route(
        "POST",
        f"{API}/organizations/",
        organizations.create_organization,
        organizations.OrganizationIn,
        "organizations",
    ),
    Route("GET", f"{ORG}/", organizations.get_organization, tag="organizations"),
    Route(
        "PUT",
        f"{ORG}/",
        organizations.update_organization,
        organizations.OrganizationUpdate,
        "organizations",
    ),
    # Enforcement of two-factor authentication, and the audit log
    Route("GET", f"{ORG}/2fa-compliance/", enforcement.compliance, tag="enforcement"),
    Route("GET", f"{ORG}/2fa-enforcements/", enforcement.list_enforcements, tag="enforcement"),
    Route(
        "GET",
        f"{ORG}/2fa-enforcements/{{enforcement_id}}/",
        enforcement.get_enforcement,
        tag="enforcement",
    ),
    Route("POST", f"{ORG}/2fa-reminders/", enforcement.send_reminders, tag="enforcement"),
    Route("GET", f"{ORG}/audit-logs/", audit.list_audit_logs, tag="audit"),
    Route("GET", f"{ORG}/teams/", organizations.list_teams, tag="teams"),
    Route("POST", f"{ORG}/teams/", organizations.create_team, organizations.TeamIn, "teams"),
    Route("GET", f"{ORG}/members/", members.list_members, tag="members"),
    Route("POST", f"{ORG}/members/", members.invite_member, bodies.InviteIn, "members"),
    Route("GET", f"{ORG}/members/{{member_id}}/", members.get_member, tag="members"),
    Route(
        "PUT",
        f"{ORG}/members/{{member_id}}/",
        members.update_member,
        members.MemberUpdate,
        "members",
    ),
    Route("DELETE", f"{ORG}/members/{{member_id}}/", members.delete_member, tag="members"),
    Route("POST", f"{ORG}/members/{{member_id}}/reset-2fa/", members.reset_2fa, tag="members"),
    # Webhooks
    Route("GET", f"{ORG}/webhooks/", webhooks.list_webhooks, tag="webhooks"),
    Route("POST", f"{ORG}/webhooks/", webhooks.create_webhook, webhooks.WebhookIn, "webhooks"),
    Route("GET", f"{ORG}/webhooks/{{webhook_id}}/", webhooks.get_webhook, tag="webhooks"),
    Route(
        "PUT",
        f"{ORG}/webhooks/{{webhook_id}}/",
        webhooks.update_webhook,
        webhooks.WebhookChange,
        "webhooks",
    ),
    Route("DELETE", f"{ORG}/webhooks/{{webhook_id}}/", webhooks.delete_webhook, tag="webhooks"),
    Route("POST", f"{ORG}/webhooks/{{webhook_id}}/ping/", webhooks.ping_webhook, tag="webhooks"),
    Route(
        "POST",
        f"{ORG}/webhooks/{{webhook_id}}/rotate-secret/",
        webhooks.rotate_secret,
        tag="webhooks",
    ),
    Route(
        "GET",
        f"{ORG}/webhooks/{{webhook_id}}/deliveries/",
        webhooks.list_deliveries,
        tag="webhooks",
    ),
    Route(
        "POST",
        f"{ORG}/webhooks/{{webhook_id}}/deliveries/{{delivery_id}}/redeliver/",
        webhooks.redeliver,
        tag="webhooks",
    ),
    # Single sign-on
    Route("GET", f"{ORG}/sso/", sso.get_sso, tag="sso"),
    Route("PUT", f"{ORG}/sso/", sso.put_sso, bodies.SsoIn, "sso"),
    Route("DELETE", f"{ORG}/sso/", sso.delete_sso, tag="sso"),
    # Invitations and rejoining
    Route(
        "GET", f"{API}/accept-invite/{{member_id}}/{{token}}/", invites.get_invite, tag="invites"
    ),
    Route(
        "POST",
        f"{API}/accept-invite/{{member_id}}/{{token}}/",
        invites.accept_invite,
        tag="invites",
    ),
    # Operations
    Route("GET", "/healthz", health.healthz, tag="operations"),
    Route("GET", "/metrics", metrics.metrics, tag="operations"),
]

# Pages for people (HTML, not in the OpenAPI document).
PAGES: list[Route] = [
    Route("GET", "/", home.home_page, tag="pages"),
    Route("GET", "/accept/{member_id}/{token}/", accept.accept_page, tag="pages"),
    Route("POST", "/accept/{member_id}/{token}/", accept.accept_page, tag="pages"),
    Route("GET", "/auth/login/", sign_in.login_page, tag="pages"),
    Route("POST", "/auth/login/", sign_in.login_page, tag="pages"),
    Route("GET", "/auth/register/", sign_in.register_page, tag="pages"),
    Route("POST", "/auth/register/", sign_in.register_page, tag="pages"),
    Route("POST", "/auth/logout/", sign_in.logout_page, tag="pages"),
    # Before /auth/sso/{org}/: "callback" is not an organization's slug.
    Route("GET", "/auth/sso/", sso_pages.sso_choose_page, tag="pages"),
    Route("GET", "/auth/sso/callback/", sso_pages.sso_callback_page, tag="pages"),
    Route("GET", "/auth/sso/{org}/", sso_pages.sso_start_page, tag="pages"),
    Route("GET", "/account/security/", account_pages.security_page, tag="pages"),
    Route("POST", "/account/security/totp/", account_pages.enroll_totp_page, tag="pages"),
    Route("POST", "/account/security/webauthn/", account_pages.enroll_webauthn_page, tag="pages"),
    Route("POST", "/account/security/sms/", account_pages.enroll_sms_page, tag="pages"),
    Route("POST", "/account/security/recovery/", account_pages.recovery_codes_page, tag="pages"),
    Route(
        "POST",
        "/account/security/factors/{id}/rename/",
        account_pages.rename_factor_page,
        tag="pages",
    ),
    Route(
        "POST",
        "/account/security/factors/{id}/remove/",
        account_pages.remove_factor_page,
        tag="pages",
    ),
    Route(
        "POST", "/account/security/sessions/{id}/end/", account_pages.end_session_page, tag="pages"
    ),
    Route(
        "POST",
        "/account/security/sessions/end-others/",
        account_pages.end_other_sessions_page,
        tag="pages",
    ),
    Route("GET", "/account/tokens/", tokens.tokens_page, tag="pages"),
    Route("POST", "/account/tokens/", tokens.create_token_page, tag="pages"),
    Route("POST", "/account/tokens/{id}/revoke/", tokens.revoke_token_page, tag="pages"),
    Route("GET", "/docs/", docs.docs_page, tag="pages"),
    # Before /organizations/{org}/: "new" is a reserved slug.
    Route("GET", "/organizations/new/", home.new_organization_page, tag="pages"),
    Route("POST", "/organizations/new/", home.new_organization_page, tag="pages"),
    Route("GET", "/organizations/{org}/", home.organization_page, tag="pages"),
    Route("GET", "/organizations/{org}/settings/", org_pages.settings_page, tag="pages"),
    Route("POST", "/organizations/{org}/settings/", org_pages.settings_page, tag="pages"),
    Route("GET", "/organizations/{org}/webhooks/", org_webhooks.webhooks_page, tag="pages"),
    Route("POST", "/organizations/{org}/webhooks/", org_webhooks.webhook_create_page, tag="pages"),
    Route("GET", "/organizations/{org}/settings/sso/", org_sso.sso_settings_page, tag="pages"),
    Route("POST", "/organizations/{org}/settings/sso/", org_sso.sso_settings_page, tag="pages"),
    Route(
        "POST",
        "/organizations/{org}/settings/sso/delete/",
        org_sso.sso_delete_page,
        tag="pages",
    ),
    Route(
        "POST",
        "/organizations/{org}/webhooks/{webhook_id}/delete/",
        org_webhooks.webhook_delete_page,
        tag="pages",
    ),
    Route(
        "POST",
        "/organizations/{org}/webhooks/{webhook_id}/ping/",
        org_webhooks.webhook_ping_page,
        tag="pages",
    ),
    Route(
        "POST",
        "/organizations/{org}/webhooks/{webhook_id}/active/",
        org_webhooks.webhook_active_page,
        tag="pages",
    ),
    Route(
        "POST",
        "/organizations/{org}/webhooks/{webhook_id}/deliveries/{delivery_id}/redeliver/",
        org_webhooks.webhook_redeliver_page,
        tag="pages",
    ),
    Route("GET", "/organizations/{org}/members/", org_members.members_page, tag="pages"),
    Route("POST", "/organizations/{org}/members/invite/", org_members.invite_page, tag="pages"),
    Route(
        "POST", "/organizations/{org}/members/resend-all/", org_members.resend_all_page, tag="pages"
    ),
    Route(
        "POST", "/organizations/{org}/members/{member_id}/role/", org_members.role_page, tag="pages"
    ),
    Route(
        "POST",
        "/organizations/{org}/members/{member_id}/remove/",
        org_members.remove_page,
        tag="pages",
    ),
    Route(
        "POST",
        "/organizations/{org}/members/{member_id}/resend/",
        org_members.resend_page,
        tag="pages",
    ),
    Route(
        "POST",
        "/organizations/{org}/members/{member_id}/reset-2fa/",
        org_members.reset_2fa_page,
        tag="pages",
    ),
    Route("POST", "/organizations/{org}/reminders/", org_pages.reminders_page, tag="pages"),
    Route(
        "POST",
        "/organizations/{org}/members/{member_id}/exempt/",
        org_members.exempt_page,
        tag="pages",
    ),
    Route("GET", "/organizations/{org}/audit-log/", org_audit.audit_log_page, tag="pages"),
    Route("GET", "/organizations/{org}/audit-log/export.csv", org_audit.audit_log_csv, tag="pages"),
    Route("GET", "/organizations/{org}/enforcements/", org_runs.runs_page, tag="pages"),
    Route("GET", "/organizations/{org}/enforcements/{run_id}/", org_runs.run_page, tag="pages"),
]


# The pages' stylesheet and scripts (package data; files only: no inline code, for the CSP).
STATIC_DIR = Path(__file__).resolve().parent / "static"
STATIC = "/static/"


async def favicon(_request: web.Request) -> web.FileResponse:
    """The pages' icon, where browsers look for it."""
    return web.FileResponse(
        STATIC_DIR / "favicon.ico", headers={"Cache-Control": "public, max-age=86400"}
    )


def add_routes(app: web.Application) -> None:
    from api.openapi import build, openapi_json

    app[OPENAPI] = build
    for route in ROUTES + PAGES:
        app.router.add_route(route.method, route.path, route.handler)
    app.router.add_get(f"{API}/openapi.json", openapi_json)
    app.router.add_get("/favicon.ico", favicon)
    app.router.add_static(STATIC, STATIC_DIR, name="static")
