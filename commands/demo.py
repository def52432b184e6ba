"""`require2fa demo` (`make demo`): the whole product once, on the embedded default.

Starts (or finds) PostgreSQL, Redis and an SMTP sink with `devstack.resolve_services`, makes the
demo's own database `require2fa_demo` anew (a `DATABASE_URL` is used as it is, and must be a
database the demo may fill), and its own Redis namespace `require2fa-demo` and mail folder
(`<data dir>/demo-mail/`), so that every run starts from the same place and prints the same
summary (but for its timings). Then it migrates, seeds an organization of 10,000 members
(`--members`) of whom 30% have no 2FA and whose owner has a TOTP factor and a password, starts
the web app (in this process, on a free port) and two `dramatiq jobs` worker processes, signs
in as the owner through the HTTP API (password, then a TOTP code), turns on Require Two-Factor
Authentication with `PUT organizations/{org}/`, follows the run with a
progress bar, waits for the emails, prints the outcome, and stops everything it started.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import click
from tqdm import tqdm

from commands.dev import ProcessGroup
from commands.devstack import Services, free_port, resolve_services
from require2fa.settings import Settings

MEMBERS = 10_000
WITHOUT_2FA = 0.3
WORKERS = 2
WORKER_THREADS = 4
# The demo's mail goes to a local sink: no provider to protect, so it may go faster than the
# production default.
DEMO_EMAIL_RATE = "500"
EMAIL_WAIT_SECONDS = 180
SUBJECT = "Mandatory: Enable Two-Factor Authentication"
DATABASE = "require2fa_demo"
NAMESPACE = "require2fa-demo"
MAIL = "demo-mail"
SLUG = "demo"


@dataclass(frozen=True)
class Owner:
    email: str
    password: str
    totp_secret: str


@dataclass(frozen=True)
class Outcome:
    postgres: str  # which servers, in words that do not change between runs
    database: str
    redis: str
    slug: str
    members: int
    removed: int
    audit_entries: int
    emails_queued: int
    emails_sent: int
    seconds: float
    eml: Path | None


async def _prepare(settings: Settings, members: int) -> tuple[str, Owner]:
    """Migrates, then seeds the organization `demo` with an owner who can sign in."""
    from commands.seed import seed
    from db import authenticators, organizations, users
    from db.migrate import migrate
    from db.pool import connect
    from require2fa import totp
    from require2fa.security import hash_password

    assert settings.database_url
    conn = await connect(settings.database_url)
    try:
        await migrate(conn)
        slug = SLUG
        if await organizations.by_slug(conn, slug) is not None:
            raise click.ClickException(
                f"the database at DATABASE_URL has an organization {slug!r} already; "
                "point DATABASE_URL at an empty database for the demo (or leave it unset)"
            )
        owner = Owner(
            email=f"owner@{slug}.example",
            password=secrets.token_urlsafe(12),
            totp_secret=totp.new_secret(),
        )
        user = await users.create(
            conn, email=owner.email, name="Demo Owner", password_hash=hash_password(owner.password)
        )
        if user is None:  # left from an earlier demo whose organization was deleted
            user = await users.by_email(conn, owner.email)
            assert user is not None
            await conn.execute(
                "update users set password_hash = $2 where id = $1",
                user["id"],
                hash_password(owner.password),
            )
        await authenticators.insert_totp(
            conn,
            user_id=user["id"],
            name="Demo authenticator",
            secret_encrypted=totp.encrypt_secret(settings.secret_key, owner.totp_secret),
            step=totp.current_step() - 2,
        )
        seeded = await seed(
            conn,
            settings,
            slug=slug,
            count=members,
            enrolled=1 - WITHOUT_2FA,
            owner_email=owner.email,
        )
        tqdm.write(
            f"seeded {slug}: {members:,} members, "
            f"{seeded.members - seeded.enrolled:,} without 2FA, "
            f"and the owner {owner.email} (password and TOTP) in {seeded.seconds:.1f}s"
        )
        return slug, owner
    finally:
        await conn.close()


async def _sign_in(http: aiohttp.ClientSession, base: str, owner: Owner) -> None:
    """Password, then the TOTP step, as a person would."""
    from require2fa import totp

    response = await http.post(
        f"{base}/api/0/auth/login/", json={"email": owner.email, "password": owner.password}
    )
    body = await response.json()
    if response.status == 200:
        return
    if response.status != 401 or not body.get("2faRequired"):
        raise click.ClickException(f"sign-in failed: {response.status} {body}")
    code = totp.code_at(owner.totp_secret, totp.current_step())
    response = await http.post(f"{base}/api/0/auth/2fa/", json={"otp": code})
    if response.status != 200:
        raise click.ClickException(f"second factor refused: {await response.text()}")


async def _get(http: aiohttp.ClientSession, url: str) -> Any:
    response = await http.get(url)
    if response.status != 200:
        raise click.ClickException(f"GET {url}: {response.status} {await response.text()}")
    return await response.json()


async def _enforce(
    http: aiohttp.ClientSession, base: str, slug: str, members: int
) -> tuple[dict[str, Any], float]:
    """Turns the requirement on over HTTP and follows the run; returns it and its seconds."""
    org_url = f"{base}/api/0/organizations/{slug}/"
    started = time.perf_counter()
    response = await http.put(org_url, json={"require2FA": True})
    if response.status != 200:
        raise click.ClickException(f"PUT {org_url}: {response.status} {await response.text()}")
    run_id = (await response.json())["enforcement"]["id"]
    run_url = f"{org_url}2fa-enforcements/{run_id}/"
    with tqdm(total=members + 1, desc="enforcing", unit="member") as bar:
        while True:
            run = await _get(http, run_url)
            if run["batchesTotal"] is not None:
                bar.total = run["total"]
            bar.n = run["removed"] + run["skipped"]
            bar.set_postfix(removed=run["removed"], refresh=False)
            bar.refresh()
            if run["status"] not in ("queued", "running"):
                seconds = time.perf_counter() - started
                break
            await asyncio.sleep(0.1)
    if run["status"] != "completed":
        raise click.ClickException(f"enforcement run {run_id} ended {run['status']}")
    return run, seconds


async def _wait_for_emails(http: aiohttp.ClientSession, run_url: str) -> dict[str, Any]:
    run = await _get(http, run_url)
    deadline = time.monotonic() + EMAIL_WAIT_SECONDS
    with tqdm(total=run["emailsQueued"], desc="emails", unit="email") as bar:
        while run["emailsSent"] < run["emailsQueued"] and time.monotonic() < deadline:
            await asyncio.sleep(0.25)
            run = await _get(http, run_url)
            bar.n = run["emailsSent"]
            bar.refresh()
    return run


def _one_email(mail_dir: Path) -> Path | None:
    """The newest .eml in the sink whose subject is the removal email's."""
    for path in sorted(mail_dir.glob("*.eml"), reverse=True):
        with contextlib.suppress(OSError):
            if SUBJECT.encode() in path.read_bytes()[:4096]:
                return path
    return None


async def _run(
    settings: Settings, services: Services, slug: str, owner: Owner, members: int, mail: bool
) -> Outcome:
    from aiohttp import web

    from api.app import create_app
    from db.pool import connect

    runner = web.AppRunner(create_app(settings), access_log=None)
    await runner.setup()
    port = int(settings.base_url.rsplit(":", 1)[1])
    await web.TCPSite(runner, "127.0.0.1", port).start()
    base = settings.base_url
    try:
        jar = aiohttp.CookieJar(unsafe=True)  # cookies for 127.0.0.1
        async with aiohttp.ClientSession(cookie_jar=jar) as http:
            await _sign_in(http, base, owner)
            run, seconds = await _enforce(http, base, slug, members)
            run = await _wait_for_emails(
                http, f"{base}/api/0/organizations/{slug}/2fa-enforcements/{run['id']}/"
            )
        assert settings.database_url
        conn = await connect(settings.database_url)
        try:
            audit_entries = await conn.fetchval(
                """select count(*) from audit_log a join organizations o
                   on o.id = a.organization_id
                   where o.slug = $1 and a.event = 'member.pending'""",
                slug,
            )
        finally:
            await conn.close()
    finally:
        await runner.cleanup()
    return Outcome(
        postgres=services.postgres,
        database=urlsplit(services.database_url).path.lstrip("/"),
        redis=services.redis,
        slug=slug,
        members=run["total"],
        removed=run["removed"],
        audit_entries=audit_entries,
        emails_queued=run["emailsQueued"],
        emails_sent=run["emailsSent"],
        seconds=seconds,
        eml=_one_email(services.mail_dir) if mail else None,
    )


def run_demo(data_dir: Path, *, members: int = MEMBERS) -> Outcome:
    """Everything the demo does; every server and process it started is stopped on return."""
    smtp_given = bool(os.environ.get("SMTP_URL"))
    shutil.rmtree(Path(data_dir) / MAIL, ignore_errors=True)  # this run's emails only
    with resolve_services(
        data_dir, os.environ, database=DATABASE, fresh=True, mail=MAIL
    ) as services:
        port = free_port()
        env = {
            **os.environ,
            "ENVIRONMENT": "development",
            "DATABASE_URL": services.database_url,
            "REDIS_URL": services.redis_url,
            "SMTP_URL": services.smtp_url,
            "REDIS_NAMESPACE": NAMESPACE,
            "BASE_URL": f"http://127.0.0.1:{port}",
            "EMAIL_RATE": os.environ.get("EMAIL_RATE") or DEMO_EMAIL_RATE,
        }
        os.environ.update(env)  # the web app's broker (`jobs.broker`) reads these on import
        settings = Settings.from_env(env)
        _forget_queues(services.redis_url, NAMESPACE)  # what a killed earlier run left
        slug, owner = asyncio.run(_prepare(settings, members))
        workers = ProcessGroup(env, log_path=Path(data_dir) / "demo-workers.log")
        command = [sys.executable, "-m", "dramatiq", "jobs", "--processes", "1"]
        for n in range(WORKERS):
            workers.start(f"worker-{n}", [*command, "--threads", str(WORKER_THREADS)])
        try:
            return asyncio.run(_run(settings, services, slug, owner, members, not smtp_given))
        finally:
            workers.stop()
            _forget_queues(services.redis_url, NAMESPACE)


def _forget_queues(redis_url: str, namespace: str) -> None:
    """Removes the demo's Redis keys (a Redis we did not start may be shared)."""
    import redis

    with contextlib.suppress(redis.RedisError):
        client = redis.Redis.from_url(redis_url)
        for key in client.scan_iter(f"{namespace}*"):
            client.delete(key)
        client.close()


def report(outcome: Outcome) -> list[str]:
    rate = outcome.members / outcome.seconds if outcome.seconds else 0.0
    lines = [
        f"postgres          {outcome.postgres}; database {outcome.database}"
        + (" (made anew for each demo)" if outcome.database == DATABASE else ""),
        f"redis             {outcome.redis}; keys {NAMESPACE}:* (removed afterwards)",
        f"organization      {outcome.slug} ({outcome.members:,} members)",
        f"removed           {outcome.removed:,}",
        f"audit entries     {outcome.audit_entries:,} member.pending",
        f"emails delivered  {outcome.emails_sent:,} of {outcome.emails_queued:,}",
        f"seconds           {outcome.seconds:.2f} (from the PUT to the last removal)",
        f"members/s         {rate:,.0f}",
    ]
    if outcome.eml is not None:
        lines.append(f"one email         {outcome.eml}")
    return lines
