"""``radnode users …`` and ``radnode tokens …``: web accounts from a shell.

Accounts are created here rather than on a web page so that the first admin
exists before anyone can log in, and so a token is printed exactly once, to
the terminal of whoever made it.
"""

from __future__ import annotations

import sys
from datetime import datetime, timezone

import click

from radnode.cli_output import echo_rows
from radnode.store.accounts import ROLES


def _sessions(ctx: click.Context):  # type: ignore[no-untyped-def]
    from radnode.store.db import open_store

    _, sessions = open_store(ctx.obj.settings())
    return sessions


@click.group("users")
def users() -> None:
    """Web users (viewer, radiologist, admin)."""


@users.command("add")
@click.argument("name")
@click.option("--role", type=click.Choice(ROLES), required=True)
@click.option("--password-stdin", is_flag=True, help="Read the password from the first line of stdin (for scripts).")
@click.pass_context
def users_add(ctx: click.Context, name: str, role: str, password_stdin: bool) -> None:
    """Create a user; the password is prompted for (twice) or read from stdin."""
    from radnode.web.auth import AccountError, add_user

    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    try:
        with _sessions(ctx).begin() as s:
            add_user(s, name, password, role, actor="cli")
    except AccountError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"user {name} ({role}) created")


@users.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def users_list(ctx: click.Context, as_json: bool) -> None:
    """Users and their roles (never their password hashes)."""
    from radnode.web.auth import list_users

    with _sessions(ctx)() as s:
        rows = [
            {"username": u.username, "role": u.role, "disabled": u.disabled, "created": datetime.fromtimestamp(u.created_at, timezone.utc).isoformat(timespec="seconds")}
            for u in list_users(s)
        ]
    echo_rows(rows, as_json=as_json, empty="no users", render=lambda r: f"{r['username']:<24} {r['role']:<12} {'disabled' if r['disabled'] else ''}  {r['created']}")


@click.group("tokens")
def tokens() -> None:
    """API tokens for scripts (Authorization: Bearer …)."""


@tokens.command("add")
@click.argument("name")
@click.option("--role", type=click.Choice(ROLES), required=True)
@click.pass_context
def tokens_add(ctx: click.Context, name: str, role: str) -> None:
    """Create a token and print it once (only its hash is stored)."""
    from radnode.web.auth import AccountError, add_token

    try:
        with _sessions(ctx).begin() as s:
            token = add_token(s, name, role, actor="cli")
    except AccountError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(token)
    click.echo(f"token {name} ({role}) created; it is shown only this once", err=True)
