"""An organization's Security & Privacy page: the require-2FA switch with its confirm steps,
its run's progress, and reminders. The members pages are `api.pages.org_members`, the runs
`api.pages.org_runs`, the audit log `api.pages.org_audit`, the webhooks
`api.pages.org_webhooks`.

They call what the API calls (`organization_settings.apply_change` through
`api.org_actions`, `api.access.org_access`, `require2fa.audit_log`), and read the settings form
with the API's own parser (`api.bodies.OrganizationUpdate`), so a page allows, refuses and writes
exactly what the matching API call does. The plumbing (rendering, HTML errors, the
same-origin check on forms) is `api.pages.base`'.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import asyncpg
from aiohttp import web
from pydantic import ValidationError

from api import org_actions
from api.access import MANAGERS, OrgAccess
from api.auth import actor
from api.bodies import OrganizationUpdate
from api.connection import request_pool
from api.dispatch import send_reminders
from api.errors import status_of
from api.keys import SETTINGS
from api.pages.base import (
    html_errors,
    org_page,
    org_url,
    read_form,
    redirect_with_notice,
    render,
    shown_here,
    take_notice,
)
from require2fa import organization_settings, organizations, reauth, rollout
from require2fa.errors import DomainError, Invalid
from require2fa.members import ROLES
from require2fa.organization_settings import SettingsChange
from require2fa.requirement import Requirement, Scope

PREVIEW = 10  # members named in the confirm dialog; the rest are a link away
LEVEL_LABELS = {
    "any": "Any second factor (app, key or phone)",
    "secure": "Secure: an authenticator app or a security key, no text messages",
    "phishing-resistant": "Phishing-resistant: security keys and passkeys only",
}
# The select's options: short enough for a phone's width (LEVEL_LABELS, in sentences, say more).
LEVEL_OPTIONS = {
    "any": "Any second factor",
    "secure": "Secure: no text messages",
    "phishing-resistant": "Phishing-resistant",
}
# The form's sentence for each field the parser refuses, the first that applies first.
FORM_ERRORS = {
    "require2FALevel": "Choose a requirement level.",
    "require2FA": "Choose to turn the requirement on or off.",
    "enforceAt": "Choose the date and time (UTC) to start.",
    "require2FAAction": "Choose what happens to members who do not meet it.",
    "require2FAScope": "Choose the roles and teams it applies to.",
}


# --- Security & Privacy -----------------------------------------------------------------------


async def _settings(
    request: web.Request,
    access: OrgAccess,
    *,
    status: int = 200,
    error: str | None = None,
    confirm: int | None = None,
    notice: str | None = None,
    preview: list[asyncpg.Record] | None = None,
    confirm_level: str | None = None,
    confirm_policy: Requirement | None = None,
    turning_on: bool = True,
    confirm_off: bool = False,
    carried: list[tuple[str, str]] | None = None,
) -> web.Response:
    org = access.org
    run, emails, blocked = None, (0, 0), None
    pool = await request_pool(request)
    orgs = await organizations.of_user(pool, access.auth.user_id)
    if access.role in MANAGERS:
        current = await rollout.current_run(pool, org["id"])
        if current is not None:
            run, emails = current.run, current.emails
    if access.role == "owner" and not org["require_2fa"]:
        try:
            await organization_settings.precheck(
                pool,
                org,
                SettingsChange(require_2fa=True),
                actor=actor(request, access.auth),
                role=access.role,
            )
        except DomainError as refused:
            blocked = refused.detail
    return await render(
        request,
        "settings.html",
        status=status,
        org=org,
        role=access.role,
        orgs=orgs,
        section="settings",
        error=error if error != blocked else None,
        blocked=blocked,
        blocked_2fa=blocked == organization_settings.NEEDS_PERSONAL_2FA,
        confirm=confirm,
        preview=preview or [],
        notice=notice or (None if error else await take_notice(request)),
        confirm_off=confirm_off,
        can_remind=access.role in MANAGERS,
        confirm_level=confirm_level or org["require_2fa_level"],
        confirm_policy=confirm_policy or Requirement.of(org),
        turning_on=turning_on,
        levels=LEVEL_LABELS,
        level_options=LEVEL_OPTIONS,
        run=run,
        emails=emails,
        window_days=request.app[SETTINGS].reinstatement_window.days,
        policy=await _policy(pool, org),
        policy_scope=Scope.of(org),  # the members page's `is:noncompliant` is in this scope
        carried=carried or [],
    )


async def _policy(pool: asyncpg.Pool, org: asyncpg.Record) -> dict[str, object]:
    """The enforcement policy's fields as the form shows them: the action, the scope, and the
    roles and teams there are to choose from."""
    scope = Scope.of(org)
    teams = await organizations.teams(pool, org["id"])
    return {
        "action": org["require_2fa_action"],
        "roles": scope.roles,
        "teams": scope.teams,
        "all_roles": ROLES,
        "all_teams": [team["slug"] for team in teams],
    }


# The policy's fields of the form, carried through the confirm dialog as they were sent.
_POLICY_FIELDS = ("require2FAAction", "scopeWho", "scopeRole-", "scopeTeam-")


@html_errors
async def settings_page(request: web.Request) -> web.StreamResponse:
    """The require-2FA switch (owners). Turning it on first answers a confirm dialog with the
    number of members it would remove; turning it off (or cancelling a schedule) asks first
    too, with an optional reason for the audit log. Confirmed, it goes through
    `organization_settings.apply_change` (the run, `org.edit`, the coordinator) and comes back
    here with a notice saying what changed."""
    form = await read_form(request) if request.method == "POST" else None
    access = await org_page(request)
    if form is None:
        return await _settings(request, access)
    try:
        change = _settings_change(form)
    except ValueError as bad:
        return await _settings(request, access, status=400, error=str(bad))
    except Invalid as bad:  # a scope without a role or team, an unknown role
        return await _settings(request, access, status=400, error=bad.detail)
    try:
        planned = organization_settings.plan(access.org, change)
        turning_off = planned.run == "cancel" or planned.schedule == "cancel"
        if (planned.confirm or turning_off) and form.get("confirmed") != "yes":
            pool = await request_pool(request)
            who = actor(request, access.auth)
            planned = await organization_settings.precheck(
                pool, access.org, change, actor=who, role=access.role
            )
            if turning_off:
                return await _settings(request, access, confirm_off=True)
            # The count and the first names that `2fa-compliance` answers, at the level being
            # chosen (the acting owner left out).
            found = await organization_settings.would_remove(
                pool, access.org, planned, actor=who, limit=PREVIEW
            )
            return await _settings(
                request,
                access,
                confirm=found.count,
                preview=found.rows,
                confirm_level=change.level,
                confirm_policy=planned.after,
                turning_on=planned.turns_on,
                carried=[(k, v) for k, v in form.items() if k.startswith(_POLICY_FIELDS)],
            )
        await org_actions.change_settings(request, access, change)
    except DomainError as refused:
        if refused.code == reauth.REQUIRED_CODE or not shown_here(refused):
            raise  # the page asks for the password or a code, then goes on; or an error page
        return await _settings(request, access, status=status_of(refused), error=refused.detail)
    notice = _notice(planned)
    raise await redirect_with_notice(org_url(access, "settings/"), request, notice)


def _notice(planned: organization_settings.Plan) -> str:
    """What the settings page says once a change went through."""
    after = planned.after
    if planned.schedule in ("create", "replace") and after.enforce_at is not None:
        return (
            "Two-factor authentication will be required from"
            f" {after.enforce_at.astimezone(UTC):%Y-%m-%d %H:%M} UTC."
        )
    if planned.run == "start":
        return (
            "Two-factor authentication is now required. Members without it are being removed"
            " and emailed a link back; follow the run below."
        )
    if planned.run == "cancel":
        return (
            "Two-factor authentication is no longer required. Members removed so far stay"
            " pending and can rejoin with their link."
        )
    if planned.schedule == "cancel":
        return "The scheduled requirement was cancelled: nobody will be removed."
    level = f" The level is now: {LEVEL_LABELS[after.level]}."
    if planned.run == "restart":
        return "The requirement was tightened: members are checked again." + level
    if planned.edits:
        return "The requirement's settings were saved." + level
    return "Nothing changed."


def _settings_change(form: dict[str, str]) -> SettingsChange:
    """The change the settings form asks for, through the API's parser (strictly: a form sends
    `on` or `off`, and a date and time in UTC); ValueError with the form's sentence."""
    data: dict[str, object] = {}
    choice = form.get("require2FA")
    if choice is not None:
        data["require2FA"] = {"on": True, "off": False}.get(choice, choice)
    if form.get("require2FALevel"):
        data["require2FALevel"] = form["require2FALevel"]
    if form.get("require2FAAction"):
        data["require2FAAction"] = form["require2FAAction"]
    if form.get("scopeWho") == "everyone":
        data["require2FAScope"] = None
    elif form.get("scopeWho") == "some":
        data["require2FAScope"] = {
            "roles": [k.removeprefix("scopeRole-") for k in form if k.startswith("scopeRole-")],
            "teams": [k.removeprefix("scopeTeam-") for k in form if k.startswith("scopeTeam-")],
        }
    if choice == "on" and form.get("when") == "date":
        value = form.get("enforceAt", "")
        data["enforceAt"] = _enforce_at(value) or value
    try:
        body = OrganizationUpdate.model_validate(data, strict=True)
    except ValidationError as err:
        refused = {str(item["loc"][0]) for item in err.errors()}
        raise ValueError(
            next(text for key, text in FORM_ERRORS.items() if key in refused)
        ) from None
    change = body.change()
    if change.empty:
        raise ValueError(FORM_ERRORS["require2FA"])
    reason = form.get("reason", "").strip()[:500]
    return replace(change, reason=reason) if reason and choice == "off" else change


@html_errors
async def reminders_page(request: web.Request) -> web.StreamResponse:
    """ "Send reminders" (owners, managers): what `POST …/2fa-reminders/` does (the
    `enforcement.queue_reminders` message: today's reminder to each member without 2FA, once a
    day each); back on the settings page with a notice."""
    await read_form(request)
    access = await org_page(request, roles=MANAGERS)
    await send_reminders(access.org["id"], access.auth.user_id)
    return await _settings(
        request,
        access,
        notice="Reminders are being sent to every member without two-factor authentication"
        " (at most one a day each).",
    )


def _enforce_at(value: str) -> datetime | None:
    """The form's `datetime-local` value, read as UTC (the page says so); None when it is not
    a date and time."""
    try:
        moment = datetime.fromisoformat(value.strip()[:40])
    except ValueError:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment
