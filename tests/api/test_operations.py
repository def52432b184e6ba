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
