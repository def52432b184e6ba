"""The access log (one line per request, accept tokens redacted) and /metrics' figures."""

from __future__ import annotations

import re

import dramatiq
from structlog.testing import capture_logs

from tests.factories import add_member, create_user, owner_and_org, remove_for_2fa


def sample(text: str, name: str, **labels: str) -> float | None:
    """The value of one sample in Prometheus text, or None."""
    for line in text.splitlines():
        if not line.startswith(name + ("{" if labels else " ")):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0])) if labels else {}
        if all(found.get(k) == v for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


async def test_one_access_line_per_request_with_the_token_redacted(client, pool, settings) -> None:
    owner, org = await owner_and_org(pool, "acme", "owner@example.com")
    member_id = await add_member(pool, org["id"], await create_user(pool, "a@example.com"))
    link = await remove_for_2fa(pool, member_id, settings)
    token = link.rstrip("/").rsplit("/", 1)[1]
    with capture_logs() as logs:
        assert (await client.get(link.replace(settings.base_url, ""))).status == 200
        api = await client.get(f"/api/0/accept-invite/{member_id}/{token}/")
        assert api.status == 200
        await client.get(f"/accept/{member_id}/{token}")  # no trailing slash: unmatched
        await client.get("/healthz", headers={"X-Request-ID": "abc-123"})
    lines = [entry for entry in logs if entry["event"] == "request"]
    assert [entry["path"] for entry in lines] == [
        f"/accept/{member_id}/***/",
        f"/api/0/accept-invite/{member_id}/***/",
        f"/accept/{member_id}/***",
        "/healthz",
    ]
    assert lines[0]["route"] == "/accept/{member_id}/{token}/" and lines[0]["status"] == 200
    assert lines[3]["request_id"] == "abc-123" and isinstance(lines[3]["ms"], float)
    assert token not in repr(logs)


async def test_metrics_count_requests_the_outbox_and_the_workers(
    client, pool, settings, broker, start_worker
) -> None:
    await client.get("/healthz")
    await client.get("/api/0/nothing/")
    owner, org = await owner_and_org(pool, "acme", "owner@example.com")
    member_id = await add_member(pool, org["id"], await create_user(pool, "a@example.com"))
    await remove_for_2fa(pool, member_id, settings)  # one email waiting in the outbox

    text = await (await client.get("/metrics")).text()
    ok = sample(text, "require2fa_http_requests_total", route="/healthz", status="200")
    assert ok is not None and ok >= 1
    assert sample(text, "require2fa_http_requests_total", route="(unmatched)", status="404")
    assert sample(text, "require2fa_http_request_duration_seconds_count", route="/healthz")
    assert sample(text, "require2fa_outbox_pending") == 1
    assert sample(text, "require2fa_outbox_oldest_pending_seconds") is not None
    assert sample(text, "dramatiq_queue_messages", queue="email", state="waiting") == 0

    # A worker delivers the email.
    from jobs import email as email_jobs

    sent_before = sample(text, "require2fa_emails_sent_total") or 0  # other tests' workers
    email_jobs.dispatch_job.send()
    text = await (await client.get("/metrics")).text()
    assert sample(text, "dramatiq_queue_messages", queue="email", state="waiting") == 1
    worker = start_worker("email", threads=1)
    broker.join("email", timeout=60_000)
    worker.join()
    text = await (await client.get("/metrics")).text()
    processed = sample(
        text, "dramatiq_messages_total", queue_name="email", actor_name="email.dispatch"
    )
    assert processed is not None and processed >= 1
    sent = sample(text, "require2fa_emails_sent_total")
    assert sent == sent_before + 1  # the test SMTP server took it
    count = sample(
        text,
        "dramatiq_message_duration_milliseconds_count",
        queue_name="email",
        actor_name="email.dispatch",
    )
    assert count == processed
    assert isinstance(dramatiq.get_broker(), type(broker))


async def test_methods_of_no_route_share_one_metrics_label(client) -> None:
    # Methods the HTTP parser knows (WebDAV's) but no route of ours answers.
    for method in ("PROPFIND", "MKCOL", "LOCK"):
        assert (await client.request(method, "/healthz")).status == 405
    text = await (await client.get("/metrics")).text()
    assert not re.search(r'method="(PROPFIND|MKCOL|LOCK)"', text)  # no series per method
    other = sample(text, "require2fa_http_requests_total", method="OTHER", status="405")
    assert other is not None and other >= 3
