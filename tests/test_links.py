"""Every link comes from `require2fa.links`; every email context from
`require2fa.email_contexts`, and each of those renders its template."""

from __future__ import annotations

from datetime import UTC, datetime

from db.outbox import TEMPLATES
from require2fa import email_contexts, links
from require2fa.emails import render
from require2fa.settings import DEV_SECRET_KEY as KEY
from require2fa.settings import Settings

BASE = "https://2fa.example.com"


def test_links() -> None:
    assert links.accept_path(41, "tok-abc_123") == "/accept/41/tok-abc_123/"
    assert links.accept_url(BASE, 41, "tok-abc_123") == f"{BASE}/accept/41/tok-abc_123/"
    assert links.accept_url(BASE + "/", 41, "t") == f"{BASE}/accept/41/t/"
    assert links.accept_path(1, "a/b?c") == "/accept/1/a%2Fb%3Fc/"
    assert links.security_url(BASE) == f"{BASE}/account/security/"
    assert links.organization_path("acme") == "/organizations/acme/"
    assert links.organization_path("acme", "members/") == "/organizations/acme/members/"
    assert links.organization_url(BASE, "acme", "settings/") == (
        f"{BASE}/organizations/acme/settings/"
    )


def test_every_template_has_a_context_builder_that_renders() -> None:
    when = datetime(2026, 6, 30, 10, tzinfo=UTC)
    contexts = {
        "removed_for_2fa": email_contexts.removed_for_2fa(
            base_url=BASE,
            secret_key=KEY,
            org_name="Acme",
            org_slug="acme",
            member_id=7,
            member_email="dev@example.com",
            token="tok",
            reinstate_by=when,
        ),
        "invite": email_contexts.invite(
            base_url=BASE,
            secret_key=KEY,
            org_name="Acme",
            org_slug="acme",
            inviter="Ada",
            member_id=7,
            token="t",
        ),
        "reminder_2fa": email_contexts.reminder_2fa(base_url=BASE, org_name="Acme", org_slug="a"),
        "expiry_soon": email_contexts.expiry_soon(
            org_name="Acme",
            org_slug="acme",
            sealed_accept_url=email_contexts.seal_link(KEY, f"{BASE}/accept/7/t/"),
            reinstate_by=when,
        ),
        "security_notice": email_contexts.security_notice(
            base_url=BASE, action="added", factor="totp", factor_name="Phone"
        ),
        "countdown_2fa": email_contexts.countdown_2fa(
            base_url=BASE, org_name="Acme", org_slug="acme", enforce_at=when, days=7
        ),
        "blocked_for_2fa": {
            **email_contexts.blocked_for_2fa(
                base_url=BASE, org_name="Acme", org_slug="acme", level="secure"
            ),
            "member_email": "dev@example.com",  # the statement adds each member's
        },
        "enforcement_summary": email_contexts.enforcement_summary(
            base_url=BASE,
            org_name="Acme",
            org_slug="acme",
            run_id=3,
            removed=1,
            skipped=2,
            total=3,
            emails_queued=1,
            emails_sent=0,
        ),
    }
    assert set(contexts) == set(TEMPLATES)
    settings = Settings(base_url=BASE)
    for template, context in contexts.items():
        rendered = render(template, context, settings)
        assert BASE in rendered.html and BASE in rendered.text, template


def test_a_batch_of_removal_contexts_is_each_members_own() -> None:
    from require2fa.security import new_tokens

    when = datetime(2026, 6, 30, 10, tzinfo=UTC)
    tokens = new_tokens(3)
    assert len(set(tokens)) == 3 and all(len(t) == 43 and "=" not in t for t in tokens)
    members = [(7, "a@example.com", tokens[0]), (8, "b@example.com", tokens[1])]
    common = dict(base_url=BASE, secret_key=KEY, org_name="Acme", org_slug="acme")
    batch = email_contexts.removed_for_2fa_each(
        members, reinstate_by=when, level="secure", **common
    )
    for (member_id, email, token), context in zip(members, batch, strict=True):
        one = email_contexts.removed_for_2fa(
            member_id=member_id,
            member_email=email,
            token=token,
            reinstate_by=when,
            level="secure",
            **common,
        )
        sealed = email_contexts.SEALED_LINK
        assert {**context, sealed: ""} == {**one, sealed: ""}
        assert email_contexts.open_link(KEY, context[sealed]) == links.accept_url(
            BASE, member_id, token
        )
        assert token not in context[sealed]
    # Each link under its own nonce: the same link sealed twice differs.
    twice = email_contexts.seal_links(KEY, [f"{BASE}/accept/7/t/"] * 2)
    assert twice[0] != twice[1] and twice[0][:16] != twice[1][:16]
