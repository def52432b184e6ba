"""Every link the product hands out (`require2fa.links`), without a database."""

from __future__ import annotations

import pytest

from require2fa import links

BASE = "https://2fa.example.com"


def test_paths() -> None:
    assert links.home_path() == "/"
    assert links.security_path() == "/account/security/"
    assert links.new_organization_path() == "/organizations/new/"
    assert links.accept_path(41, "tok-abc_123") == "/accept/41/tok-abc_123/"
    assert links.organization_path("acme") == "/organizations/acme/"
    assert links.organization_path("acme", "audit-log/") == "/organizations/acme/audit-log/"


@pytest.mark.parametrize(
    ("token", "path"),
    [
        ("a/b?c", "/accept/7/a%2Fb%3Fc/"),
        ("x#y z", "/accept/7/x%23y%20z/"),
        ("../..", "/accept/7/..%2F../"),
    ],
)
def test_a_token_stays_one_path_segment(token: str, path: str) -> None:
    assert links.accept_path(7, token) == path


def test_the_member_id_is_a_number() -> None:
    assert links.accept_path(True, "t") == "/accept/1/t/"
    with pytest.raises(ValueError):
        links.accept_path("7/../8", "t")  # type: ignore[arg-type]


def test_a_slug_stays_one_path_segment() -> None:
    assert links.organization_path("a/b") == "/organizations/a%2Fb/"


@pytest.mark.parametrize("base", [BASE, BASE + "/", BASE + "//"])
def test_absolute_links_put_base_url_in_front_once(base: str) -> None:
    assert links.absolute(base, "/x/") == f"{BASE}/x/"
    assert links.accept_url(base, 41, "t") == f"{BASE}/accept/41/t/"
    assert links.security_url(base) == f"{BASE}/account/security/"
    assert links.organization_url(base, "acme", "settings/") == (
        f"{BASE}/organizations/acme/settings/"
    )


def test_the_pending_members_link_filters_the_members_page() -> None:
    assert links.pending_members_url(BASE, "acme") == (
        f"{BASE}/organizations/acme/members/?query=is%3Apending"
    )


def test_a_base_url_with_a_path_keeps_it() -> None:
    assert links.security_url("https://example.com/2fa/") == (
        "https://example.com/2fa/account/security/"
    )
