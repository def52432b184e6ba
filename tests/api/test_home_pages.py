"""The pages to start from: `/`, New organization, the overview at a glance, Join vs Rejoin."""

from __future__ import annotations

from tests.factories import (
    PASSWORD,
    add_member,
    create_org,
    create_user,
    link_in,
    owner_and_org,
    remove_for_2fa,
    sign_in,
)


async def test_home_signed_out_offers_the_ways_in(client) -> None:
    home = await client.get("/")
    page = await home.text()
    assert home.status == 200 and home.content_type == "text/html"
    assert 'href="/auth/login/"' in page and 'href="/auth/register/"' in page
    css = await client.get("/static/app.css")
    assert css.status == 200 and css.content_type == "text/css"
    assert "@media (max-width: 40rem)" in await css.text()


async def test_signing_in_lands_on_your_organizations(client, pool) -> None:
    owner, _ = await owner_and_org(pool, "acme", "owner@example.com")
    await create_org(pool, "other", (await create_user(pool, "x@example.com"))["id"])
    signed = await client.post(
        "/auth/login/",
        data={"email": "owner@example.com", "password": PASSWORD},
        allow_redirects=False,
    )
    assert signed.status == 303 and signed.headers["Location"] == "/"
    page = await (await client.get("/")).text()
    assert "<h1>Your organizations</h1>" in page
    assert 'href="/organizations/acme/"' in page and "/organizations/other/" not in page
    assert 'href="/organizations/new/"' in page


async def test_new_organization_page_creates_it_with_you_as_owner(client, pool) -> None:
    away = await client.get("/organizations/new/", allow_redirects=False)
    assert away.status == 303 and away.headers["Location"].startswith("/auth/login/?next=")
    await create_user(pool, "owner@example.com")
    assert (await sign_in(client, "owner@example.com")).status == 200

    form = await client.get("/organizations/new/")
    assert form.status == 200 and 'name="name"' in await form.text()
    made = await client.post(
        "/organizations/new/", data={"name": "Acme Corp", "slug": ""}, allow_redirects=False
    )
    assert made.status == 303 and made.headers["Location"] == "/organizations/acme-corp/"
    overview = await (await client.get("/organizations/acme-corp/")).text()
    assert "<h1>Acme Corp</h1>" in overview and "<strong>owner</strong>" in overview

    taken = await client.post("/organizations/new/", data={"name": "Again", "slug": "acme-corp"})
    assert taken.status == 409 and "already exists" in await taken.text()
    reserved = await client.post("/organizations/new/", data={"name": "New"})
    assert reserved.status == 400 and "This slug is reserved." in await reserved.text()
    bad = await client.post("/organizations/new/", data={"name": "X", "slug": "Not A Slug!"})
    assert bad.status == 400 and 'class="error"' in await bad.text()
    empty = await client.post("/organizations/new/", data={"name": ""})
    assert empty.status == 400 and "Enter a name." in await empty.text()
    # The API refuses the reserved slug too.
    api = await client.post("/api/0/organizations/", json={"name": "n", "slug": "new"})
    assert api.status == 400


async def test_overview_shows_compliance_at_a_glance(client, pool, settings) -> None:
    owner, org = await owner_and_org(pool, "acme", "owner@example.com", has2fa=True)
    for n in range(3):
        await add_member(pool, org["id"], await create_user(pool, f"m{n}@example.com", has2fa=True))
    gone = await add_member(pool, org["id"], await create_user(pool, "gone@example.com"))
    await add_member(pool, org["id"], await create_user(pool, "no2fa@example.com"))
    await remove_for_2fa(pool, gone, settings)
    assert (await sign_in(client, "no2fa@example.com")).status == 200
    page = await (await client.get("/organizations/acme/")).text()
    # 5 active (owner, m0-m2, no2fa), 4 with 2FA, 1 without, 1 pending.
    for label, value in (("Members", 5), ("With 2FA", 4), ("Without 2FA", 1), ("Pending", 1)):
        assert f"<dt>{label}</dt><dd>{value}</dd>" in page, label
    assert "80% of the members use two-factor authentication." in page
    assert 'class="w80"' in page
    assert "Latest enforcement" not in page  # runs are for owners and managers


async def test_first_invitation_says_join_and_a_removal_says_rejoin(client, pool, settings) -> None:
    owner, org = await owner_and_org(pool, "acme", "owner@example.com")
    assert (await sign_in(client, "owner@example.com")).status == 200
    invited = await client.post(
        f"/api/0/organizations/{org['slug']}/members/",
        json={"email": "new@example.com", "role": "member"},
    )
    assert invited.status == 201, await invited.text()
    async with pool.acquire() as conn:
        context = await conn.fetchval(
            "select context from email_outbox where template = 'invite' order by id desc limit 1"
        )
    link = link_in(context).replace(settings.base_url, "")
    await client.post("/auth/logout/")
    page = await (await client.get(link)).text()
    assert "<h1>Join Acme</h1>" in page and "Rejoin" not in page

    alice = await create_user(pool, "alice@example.com")
    member_id = await add_member(pool, org["id"], alice)
    removed = (await remove_for_2fa(pool, member_id, settings)).replace(settings.base_url, "")
    page = await (await client.get(removed)).text()
    assert "<h1>Rejoin Acme</h1>" in page
