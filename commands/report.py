"""`require2fa report`: the compliance report of `GET …/2fa-compliance/?format=csv`, to a file."""

from __future__ import annotations

import sys
from typing import BinaryIO

import asyncpg
import click

from db import organizations, report


def _sink(target: BinaryIO) -> report.Sink:
    async def write(chunk: bytes) -> None:
        target.write(chunk)

    return write


async def write_report(conn: asyncpg.Connection, slug: str, output: str) -> None:
    """Writes the organization's report to `output` (`-`: standard output) as COPY streams it."""
    org = await organizations.by_slug(conn, slug)
    if org is None:
        raise click.ClickException(f"no organization with slug {slug!r}")
    if output == "-":
        await report.copy_report(conn, org["id"], _sink(sys.stdout.buffer))
        sys.stdout.buffer.flush()
        return
    with open(output, "wb") as target:  # noqa: ASYNC230 (a local file, written chunk by chunk)
        await report.copy_report(conn, org["id"], _sink(target))
