"""`/docs/`: the API reference, rendered on this server from the same `openapi.json` that
`GET /api/0/openapi.json` answers (no script, no asset from another host): one section per tag,
each operation with its request body's fields and its answers."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from aiohttp import web

from api.keys import OPENAPI
from api.pages.base import render

METHODS = ("get", "post", "put", "delete", "patch")


def _ref_name(schema: dict[str, Any]) -> str | None:
    ref = schema.get("$ref")
    return ref.rsplit("/", 1)[-1] if isinstance(ref, str) else None


def _type(schema: dict[str, Any]) -> str:
    """A schema said briefly: `string`, `integer | null`, `Member[]`, …"""
    if name := _ref_name(schema):
        return name
    if "anyOf" in schema:
        return " | ".join(_type(each) for each in schema["anyOf"])
    if schema.get("type") == "array":
        return f"{_type(schema.get('items', {}))}[]"
    if "enum" in schema:
        return " | ".join(f'"{value}"' for value in schema["enum"])
    if "const" in schema:
        return f'"{schema["const"]}"'
    return str(schema.get("type", "object"))


def _fields(document: dict[str, Any], schema: dict[str, Any]) -> list[dict[str, str]]:
    """The fields of a request body's schema (followed through its `$ref`)."""
    name = _ref_name(schema)
    if name is not None:
        schema = document["components"]["schemas"].get(name, {})
    required = set(schema.get("required", []))
    return [
        {
            "name": key,
            "type": _type(value),
            "required": "required" if key in required else "",
            "about": str(value.get("description", "")),
        }
        for key, value in schema.get("properties", {}).items()
    ]


@functools.cache
def reference(build: Callable[[], dict[str, Any]]) -> list[dict[str, Any]]:
    """The document that `build` makes as sections (tag → operations), once per process."""
    document = build()
    sections: dict[str, list[dict[str, Any]]] = {}
    for path, item in document["paths"].items():
        for method in METHODS:
            operation = item.get(method)
            if operation is None:
                continue
            body = operation.get("requestBody", {}).get("content", {}).get("application/json")
            sections.setdefault((operation.get("tags") or ["api"])[0], []).append(
                {
                    "id": operation.get("operationId") or f"{method}-{path}",
                    "method": method.upper(),
                    "path": path,
                    "summary": operation.get("summary", ""),
                    "description": operation.get("description", ""),
                    "fields": _fields(document, body["schema"]) if body else [],
                    "responses": [
                        (code, answer.get("description", ""))
                        for code, answer in operation.get("responses", {}).items()
                    ],
                }
            )
    return [{"tag": tag, "operations": ops} for tag, ops in sections.items()]


async def docs_page(request: web.Request) -> web.StreamResponse:
    """The API reference (anyone may read it, as `openapi.json`)."""
    return await render(request, "docs.html", sections=reference(request.app[OPENAPI]))
