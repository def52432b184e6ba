"""The context of every email, built in one place.

Each function returns what `require2fa.emails.render` gets for one template (stored in the
outbox row's `context`). Producers (the batch removal, the invitation, the resend, the
reminders, the expiry reminder, the security notice) call these and never assemble a context
themselves; set-based statements receive the contexts built here as a `jsonb[]` parameter.
Links come from `require2fa.links`.

An accept link is a secret (whoever holds it can rejoin as that member), so a context never
holds one in the clear: it keeps `accept_url_sealed` (`seal_link`, AES-GCM under a key derived
from SECRET_KEY), which `require2fa.emails.render` opens into `accept_url` at send time.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from require2fa import compliance, links
from require2fa.security import seal, seal_each, unseal

Context = dict[str, Any]
LINK_PURPOSE = "email-accept-link"
SEALED_LINK = "accept_url_sealed"


def seal_link(secret_key: str, url: str) -> str:
    return seal(secret_key, LINK_PURPOSE, url)


def seal_links(secret_key: str, urls: Sequence[str]) -> list[str]:
    """`seal_link` of each url (one batch's links)."""
    return seal_each(secret_key, LINK_PURPOSE, urls)


def open_link(secret_key: str, sealed: str) -> str:
    """The accept link a context keeps sealed; `ValueError` if it cannot be opened."""
    return unseal(secret_key, LINK_PURPOSE, sealed)


def _when(moment: datetime | None) -> str:
    return moment.isoformat() if moment is not None else ""


def removed_for_2fa(
    *,
    base_url: str,
    secret_key: str,
    org_name: str,
    org_slug: str,
    member_id: int,
    member_email: str,
    token: str,
    reinstate_by: datetime | None,
    level: str | None = None,
) -> Context:
    """The "Mandatory: Enable Two-Factor Authentication" email, with the member's fresh link
    back in and what the organization's level needs (`require2fa.compliance.needs`)."""
    return removed_for_2fa_each(
        [(member_id, member_email, token)],
        base_url=base_url,
        secret_key=secret_key,
        org_name=org_name,
        org_slug=org_slug,
        reinstate_by=reinstate_by,
        level=level,
    )[0]


def removed_for_2fa_each(
    members: Sequence[tuple[int, str, str]],
    *,
    base_url: str,
    secret_key: str,
    org_name: str,
    org_slug: str,
    reinstate_by: datetime | None,
    level: str | None = None,
    sso_idp: bool = False,
) -> list[Context]:
    """`removed_for_2fa` for each (member id, email, token) of one batch: what they share is
    worked out once, each link sealed on its own. `sso_idp`: the organization's identity
    provider's MFA counts too, so the email offers signing in through it with MFA (the key is
    there only then)."""
    shared: dict[str, Any] = {
        "org_name": org_name,
        "org_slug": org_slug,
        "reinstate_by": _when(reinstate_by),
        "level": compliance.level_of(level),
        "needs": compliance.needs(level),
    }
    if sso_idp:
        shared["sso_idp"] = True
    sealed = seal_links(
        secret_key,
        [links.accept_url(base_url, member_id, token) for member_id, _, token in members],
    )
    return [
        {**shared, "member_email": member_email, SEALED_LINK: link}
        for (_, member_email, _), link in zip(members, sealed, strict=True)
    ]


def invite(
    *,
    base_url: str,
    secret_key: str,
    org_name: str,
    org_slug: str,
    inviter: str,
    member_id: int,
    token: str,
) -> Context:
    """The "Join {org}" email, with the invitation's link."""
    return {
        "org_name": org_name,
        "org_slug": org_slug,
        "inviter": inviter,
        SEALED_LINK: seal_link(secret_key, links.accept_url(base_url, member_id, token)),
    }


def blocked_for_2fa(*, base_url: str, org_name: str, org_slug: str, level: str | None) -> Context:
    """The "Action required: set up two-factor authentication for {org}" email of a member
    blocked in place (shared by a batch; the statement adds each `member_email`): what the
    level needs and the security page."""
    return {
        "org_name": org_name,
        "org_slug": org_slug,
        "level": compliance.level_of(level),
        "needs": compliance.needs(level),
        "security_url": links.security_url(base_url),
    }


def reminder_2fa(*, base_url: str, org_name: str, org_slug: str) -> Context:
    """The "{org} will require two-factor authentication" email, pointing at the security page."""
    return {
        "org_name": org_name,
        "org_slug": org_slug,
        "security_url": links.security_url(base_url),
    }


def expiry_soon(
    *, org_name: str, org_slug: str, sealed_accept_url: str, reinstate_by: datetime | None
) -> Context:
    """The "Your access to {org} expires soon" email, with the member's current link, sealed (the
    one last emailed, read back from the outbox, or a fresh one from `seal_link`)."""
    return {
        "org_name": org_name,
        "org_slug": org_slug,
        SEALED_LINK: sealed_accept_url,
        "reinstate_by": _when(reinstate_by),
    }


def security_notice(*, base_url: str, action: str, factor: str, factor_name: str) -> Context:
    """The "Security notice" email: a factor was `added` or `removed`."""
    return {
        "action": action,
        "factor": factor,
        "factor_name": factor_name,
        "security_url": links.security_url(base_url),
    }


def enforcement_summary(
    *,
    base_url: str,
    org_name: str,
    org_slug: str,
    run_id: int,
    removed: int,
    skipped: int,
    total: int,
    emails_queued: int,
    emails_sent: int,
    status: str = "completed",
    error: str | None = None,
) -> Context:
    """The "{org}: two-factor enforcement finished" email to each owner: the run's counts and a
    link to the pending members; for a run that ended `failed`, why it stopped."""
    return {
        "org_name": org_name,
        "org_slug": org_slug,
        "run_id": str(run_id),
        "removed": removed,
        "skipped": skipped,
        "total": total,
        "emails_queued": emails_queued,
        "emails_sent": emails_sent,
        "pending_url": links.pending_members_url(base_url, org_slug),
        "status": status,
        "error": error or "",
    }


def security_notice_reset(*, base_url: str, org_name: str, actor: str, removed: bool) -> Context:
    """The "Security notice" email after an owner of `org_name` reset the member's 2FA;
    `removed`: the organization requires 2FA, so the member was taken out of it at once."""
    return {
        "action": "reset",
        "org_name": org_name,
        "actor": actor,
        "removed": removed,
        "security_url": links.security_url(base_url),
    }


def countdown_2fa(
    *, base_url: str, org_name: str, org_slug: str, enforce_at: datetime, days: int
) -> Context:
    """The countdown reminder "{org} will require two-factor authentication on {date}", sent
    `days` (14, 7 or 1) before a scheduled enforcement."""
    return {
        "org_name": org_name,
        "org_slug": org_slug,
        "enforce_at": _when(enforce_at),
        "days": days,
        "security_url": links.security_url(base_url),
    }
