"""Health, metrics and the OpenAPI document."""

from __future__ import annotations

from api.routes import ROUTES


async def test_healthz(client) -> None:
    response = await client.get("/healthz")
    assert response.status == 200
    assert await response.json() == {"status": "ok", "checks": {"database": "ok", "redis": "ok"}}


async def test_metrics_are_prometheus_text(client) -> None:
    response = await client.get("/metrics")
    assert response.status == 200
    assert response.content_type == "text/plain"
    assert "# HELP" in await response.text()


async def test_openapi_describes_every_route(client) -> None:
    response = await client.get("/api/0/openapi.json")
    doc = await response.json()
    assert doc["openapi"].startswith("3.1")
    for route in ROUTES:
        assert route.method.lower() in doc["paths"][route.path], route.path
    invite = doc["paths"]["/api/0/organizations/{org}/members/"]["post"]
    schema_name = invite["requestBody"]["content"]["application/json"]["schema"]["$ref"].split("/")[
        -1
    ]
    assert "email" in doc["components"]["schemas"][schema_name]["properties"]


async def test_unknown_api_path_is_json_404(client) -> None:
    response = await client.get("/api/0/nothing-here/")
    assert response.status == 404
    assert (await response.json())["detail"]
    wrong_method = await client.patch("/api/0/users/me/")
    assert wrong_method.status == 405
    assert (await wrong_method.json())["detail"]


async def test_metrics_need_the_token_outside_development(
    aiohttp_client, settings, pool, redis_url
) -> None:
    from api.app import create_app

    production = settings.replace(
        environment="production", secret_key="p" * 40, base_url="https://r2fa.example"
    )
    hidden = await aiohttp_client(create_app(production))
    assert (await hidden.get("/metrics")).status == 404
    assert (await hidden.get("/metrics", headers={"Authorization": "Bearer x"})).status == 404

    guarded = await aiohttp_client(create_app(production.replace(metrics_token="t0ken-" * 6)))
    assert (await guarded.get("/metrics")).status == 401
    wrong = await guarded.get("/metrics", headers={"Authorization": "Bearer t0ken-"})
    assert wrong.status == 401
    assert wrong.headers["WWW-Authenticate"].startswith("Bearer")
    assert "METRICS_TOKEN" in (await wrong.json())["detail"]
    right = await guarded.get("/metrics", headers={"Authorization": "Bearer " + "t0ken-" * 6})
    assert right.status == 200
    assert "# HELP" in await right.text()


async def test_metrics_in_development_are_open_until_a_token_is_set(
    aiohttp_client, settings, pool
) -> None:
    from api.app import create_app

    assert settings.development and not settings.metrics_token
    open_ = await aiohttp_client(create_app(settings))
    assert (await open_.get("/metrics")).status == 200
    guarded = await aiohttp_client(create_app(settings.replace(metrics_token="dev-token")))
    assert (await guarded.get("/metrics")).status == 401
    right = await guarded.get("/metrics", headers={"Authorization": "Bearer dev-token"})
    assert right.status == 200
