"""The OpenAPI 3.1 document, built from the route table and the request models."""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web

from api.jsonio import json_response
from api.routes import ROUTES

_PARAM = re.compile(r"{(\w+)}")


def build() -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    schemas: dict[str, Any] = {}
    for route in ROUTES:
        doc = (route.handler.__doc__ or route.handler.__name__.replace("_", " ")).strip()
        operation: dict[str, Any] = {
            "operationId": route.handler.__name__,
            "summary": doc.splitlines()[0],
            "tags": [route.tag],
            "parameters": [
                {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
                for name in _PARAM.findall(route.path)
            ],
            "responses": {
                "default": {
                    "description": "An error: JSON with a `detail` sentence",
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}
                    },
                }
            },
        }
        if route.body is not None:
            name = route.body.__name__
            schemas[name] = route.body.model_json_schema(
                ref_template="#/components/schemas/{model}"
            )
            schemas.update(schemas[name].pop("$defs", {}))
            operation["requestBody"] = {
                "required": True,
                "content": {
                    "application/json": {"schema": {"$ref": f"#/components/schemas/{name}"}}
                },
            }
        paths.setdefault(route.path, {})[route.method.lower()] = operation
    schemas["Error"] = {
        "type": "object",
        "required": ["detail"],
        "properties": {
            "detail": {"type": "string"},
            "errors": {"type": "object", "additionalProperties": {"type": "array"}},
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "require2fa", "version": "0"},
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"token": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"token": []}],
    }


async def openapi_json(request: web.Request) -> web.Response:
    """This document."""
    return json_response(build())
