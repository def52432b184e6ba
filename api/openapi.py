"""The OpenAPI 3.1 document, built from the route table, the request models and what each
operation answers (`api.answers`, with the models of `api.shapes`): every schema of its
components is derived from a pydantic model."""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web

from api import answers, shapes
from api.answers import Answer
from api.jsonio import json_response
from api.routes import API, ROUTES

_PARAM = re.compile(r"{(\w+)}")
OPENAPI_PATH = f"{API}/openapi.json"
_SECURITY: list[dict[str, list[str]]] = [{"token": []}, {"session": []}]


def _content(answers: Answer | tuple[Answer, ...], components: dict[str, Any]) -> dict[str, Any]:
    if isinstance(answers, Answer):
        answers = (answers,)
    return {
        answer.media_type: {"schema": shapes.schema_of(answer.shape, components)}
        for answer in answers
        if answer.shape is not None
    }


def _headers(answers: Answer | tuple[Answer, ...]) -> dict[str, Any]:
    """The answers' headers; required when every media type carries them."""
    if isinstance(answers, Answer):
        answers = (answers,)
    names = {name for answer in answers for name in answer.headers}
    return {
        name: {
            "required": all(name in answer.headers for answer in answers),
            "schema": {"type": "string"},
            "description": _HEADER_TEXT[name],
        }
        for name in sorted(names)
    }


_HEADER_TEXT = {
    "Link": 'Cursor pagination: `rel="next"` with `results="true"` when there is more.',
    "Retry-After": "Seconds to wait before trying again.",
}


def responses(operation: answers.Operation, components: dict[str, Any]) -> dict[str, Any]:
    """The operation's documented answers: its successes, then its errors; the models they name
    are filed in `components`."""
    documented: dict[str, Any] = {}
    for status, given in sorted(operation.success.items()):
        first = given if isinstance(given, Answer) else given[0]
        response: dict[str, Any] = {"description": first.description}
        if content := _content(given, components):
            response["content"] = content
        if headers := _headers(given):
            response["headers"] = headers
        documented[str(status)] = response
    for status in operation.errors:
        error: dict[str, Any] = {
            "description": answers.ERROR_TEXT[status],
            "content": {"application/json": {"schema": shapes.schema_of(shapes.Error, components)}},
        }
        if status == 429:
            error["headers"] = _headers(Answer(None, "", headers=("Retry-After",)))
        documented[str(status)] = error
    return documented


def build() -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    components: dict[str, Any] = {}
    for route in ROUTES:
        key = (route.method, route.path)
        if key not in answers.OPERATIONS:
            raise LookupError(f"{route.method} {route.path} has no entry in api.answers.OPERATIONS")
        doc = (route.handler.__doc__ or route.handler.__name__.replace("_", " ")).strip()
        operation: dict[str, Any] = {
            "operationId": route.handler.__name__,
            "summary": doc.splitlines()[0],
            "description": " ".join(doc.split()),
            "tags": [route.tag],
            "parameters": [
                {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
                for name in _PARAM.findall(route.path)
            ]
            + answers.QUERY.get(key, []),
            "responses": responses(answers.OPERATIONS[key], components),
        }
        if key in answers.ANONYMOUS:
            operation["security"] = [{}, *_SECURITY]
        if route.body is not None:
            name = route.body.__name__
            body = route.body.model_json_schema(ref_template=shapes.REF)
            for each, schema in body.pop("$defs", {}).items():
                shapes.file(components, each, schema)
            shapes.file(components, name, body)
            operation["requestBody"] = {
                "required": True,
                "content": {
                    "application/json": {"schema": {"$ref": shapes.REF.format(model=name)}}
                },
            }
        paths.setdefault(route.path, {})[route.method.lower()] = operation
    paths[OPENAPI_PATH] = {
        "get": {
            "operationId": "openapi_json",
            "summary": "This document.",
            "tags": ["operations"],
            "security": [{}, *_SECURITY],
            "responses": {
                "200": {
                    "description": "OpenAPI 3.1.",
                    "content": {"application/json": {"schema": {"type": "object"}}},
                }
            },
        }
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "require2fa", "version": "0"},
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "token": {"type": "http", "scheme": "bearer"},
                "session": {"type": "apiKey", "in": "cookie", "name": "r2fa_session"},
            },
        },
        "security": _SECURITY,
    }


async def openapi_json(_request: web.Request) -> web.Response:
    """This document."""
    return json_response(build())
