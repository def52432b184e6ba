"""Cursor pagination in Sentry's form: `?cursor=` and a `Link` header with previous/next."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from aiohttp import web

from api.errors import MAX_ID, api_error

MAX_PER_PAGE = 1000
R = TypeVar("R", bound=Any)
C = TypeVar("C")


def page_args(request: web.Request, *, default: int = 100) -> tuple[int | None, int]:
    """(cursor, per_page) from the query string; the cursor is the last id of the page before."""
    cursor_text = request.query.get("cursor", "")
    try:
        cursor = int(cursor_text.split(":")[0]) if cursor_text else None
    except ValueError:
        raise api_error(400, "Invalid cursor or per_page.") from None
    if cursor is not None and not 0 <= cursor <= MAX_ID:
        raise api_error(400, "Invalid cursor.")
    return cursor, per_page_arg(request, default=default)


def per_page_arg(request: web.Request, *, default: int = 100) -> int:
    """`?per_page=` (1 to `MAX_PER_PAGE`), `default` when absent."""
    try:
        per_page = int(request.query.get("per_page", str(default)))
    except ValueError:
        raise api_error(400, "Invalid cursor or per_page.") from None
    if not 1 <= per_page <= MAX_PER_PAGE:
        raise api_error(400, f"per_page must be between 1 and {MAX_PER_PAGE}.")
    return per_page


def split_page(
    rows: list[R], per_page: int, key: Callable[[R], C] = lambda row: row["id"]
) -> tuple[list[R], C | None]:
    """Rows fetched with `limit per_page + 1`: this page, and the cursor of the next one (`key`
    of its last row; None when this is the last)."""
    if len(rows) > per_page:
        return rows[:per_page], key(rows[per_page - 1])
    return rows, None


def link_header(request: web.Request, *, next_cursor: int | str | None) -> str:
    """A Link header: `next` carries the cursor and whether more results exist."""
    base = request.url.with_query({k: v for k, v in request.query.items() if k != "cursor"})
    first = f'<{base}>; rel="previous"; results="false"; cursor=""'
    if next_cursor is None:
        return f'{first}, <{base}>; rel="next"; results="false"; cursor=""'
    url = base.update_query(cursor=str(next_cursor))
    return f'{first}, <{url}>; rel="next"; results="true"; cursor="{next_cursor}"'
