"""`require2fa demo` and `dev`: the embedded default for trying and developing the product."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import click

from commands.support import load_settings
from require2fa import logs


@click.command()
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where the embedded servers keep their data (default: $DATA_DIR or .require2fa).",
)
@click.option(
    "--members",
    type=click.IntRange(10, 1_000_000),
    default=10_000,
    show_default=True,
    help="Members of the demo organization.",
)
def demo(data_dir: Path | None, members: int) -> None:
    """Seed 10,000 members (30% without 2FA), require 2FA over HTTP as the owner, watch the
    workers remove them, and print the outcome; stops everything it started."""
    from commands.demo import report, run_demo

    # Progress bars and the outcome only: the servers' and sink's own chatter stays out.
    logs.configure(os.environ.get("LOG_FORMAT") or "text", level=logging.WARNING)
    outcome = run_demo(
        data_dir or Path(os.environ.get("DATA_DIR") or ".require2fa"), members=members
    )
    for line in report(outcome):
        click.echo(line)


@click.command()
@click.option("--port", type=click.IntRange(1, 65535), default=None, help="Default: $PORT or 8000.")
@click.option(
    "--processes",
    type=click.IntRange(1, 16),
    default=1,
    show_default=True,
    help="Worker processes.",
)
@click.option(
    "--threads",
    type=click.IntRange(1, 64),
    default=4,
    show_default=True,
    help="Threads per worker process.",
)
def dev(port: int | None, processes: int, threads: int) -> None:
    """Run web + worker + clock + a local SMTP sink on the embedded default, in the foreground."""
    from commands.dev import run_dev

    settings = load_settings(environment="development", beside_dev=False)
    sys.exit(
        run_dev(
            Path(settings.data_dir),
            port=port or settings.port,
            worker_processes=processes,
            worker_threads=threads,
        )
    )
