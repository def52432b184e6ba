"""`require2fa createuser`, `createtoken` and `totp-code`: users, their API tokens, and the current
code of a TOTP secret."""

from __future__ import annotations

import sys
from typing import Any

import click

from commands.support import DATABASE_ONLY, BadValue, Failure, load_settings, run_db


@click.command()
@click.option("--email", required=True)
@click.option(
    "--password",
    default=None,
    help="The password, or - to read it from stdin. Without it, asked for twice on the "
    "terminal (hidden); refused when there is no terminal.",
)
@click.option("--name", default="")
@click.option("--superuser", is_flag=True)
def createuser(email: str, password: str | None, name: str, superuser: bool) -> None:
    """Create a user (with a password: from --password, stdin, or asked on the terminal)."""
    from db import users
    from require2fa.security import hash_password

    if password == "-":
        password = sys.stdin.readline().rstrip("\n")
        if not password:
            raise BadValue("--password -: stdin gave no password")

    async def work(conn: Any) -> Any:
        # The database answers first: nobody types a password for a server that is not there,
        # or for an email that is taken.
        if password is None and await users.by_email(conn, email) is not None:
            return None
        given = password if password is not None else _ask_password()
        return await users.create(
            conn,
            email=email,
            name=name,
            password_hash=hash_password(given),
            is_superuser=superuser,
        )

    user = run_db(load_settings(needs=DATABASE_ONLY), work)
    if user is None:
        raise Failure(f"a user with email {email} exists already")
    click.echo(f"created user {user['id']} <{user['email']}>")


def _ask_password() -> str:
    """Twice, hidden, on the terminal; `BadValue` when there is none (a script that forgot
    --password must not make a user nobody can sign in as)."""
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise BadValue(
            "--password not given and no terminal to ask on: pass --password P, "
            "or --password - to read it from stdin"
        )
    password: str = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    if not password:
        raise BadValue("the password is empty")
    return password


@click.command()
@click.option("--email", required=True)
@click.option("--name", default="cli")
def createtoken(email: str, name: str) -> None:
    """Create an API token for a user and print it (it is shown this once)."""
    from db import users
    from require2fa import tokens

    async def work(conn: Any) -> str | None:
        user = await users.by_email(conn, email)
        if user is None:
            return None
        _, token = await tokens.issue(conn, user["id"], name=name)
        return token

    token = run_db(load_settings(needs=DATABASE_ONLY), work)
    if token is None:
        raise Failure(f"no user with email {email}")
    click.echo(token)


@click.command("totp-code")
@click.argument("secret")
def totp_code(secret: str) -> None:
    """Print the current code of a TOTP secret (for a seeded owner; development and demos)."""
    from require2fa import totp

    try:
        click.echo(totp.code_at(secret.replace(" ", "").upper(), totp.current_step()))
    except (ValueError, TypeError) as err:
        raise BadValue(f"not a base32 TOTP secret ({err})") from None
