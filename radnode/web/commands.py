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


# --------------------------------------------------------------------------
# Taking access back (issue 14): every change ends the user's sessions at once.
# --------------------------------------------------------------------------


def _account_change(ctx: click.Context, fn, *args, done: str) -> None:  # type: ignore[no-untyped-def]
    from radnode.web.auth import AccountError

    try:
        with _sessions(ctx).begin() as s:
            fn(s, *args, actor="cli", source="cli")
    except AccountError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(done)


@users.command("disable")
@click.argument("name")
@click.pass_context
def users_disable(ctx: click.Context, name: str) -> None:
    """Disable a user: refused at login, and every open session ends now."""
    from radnode.web.auth import set_disabled

    _account_change(ctx, set_disabled, name, True, done=f"user {name} disabled")


@users.command("enable")
@click.argument("name")
@click.pass_context
def users_enable(ctx: click.Context, name: str) -> None:
    """Enable a disabled user."""
    from radnode.web.auth import set_disabled

    _account_change(ctx, set_disabled, name, False, done=f"user {name} enabled")


@users.command("delete")
@click.argument("name")
@click.option("--yes", is_flag=True, help="Do not ask.")
@click.pass_context
def users_delete(ctx: click.Context, name: str, yes: bool) -> None:
    """Delete a user and end its sessions (the audit trail keeps its name)."""
    from radnode.web.auth import delete_user

    if not yes:
        click.confirm(f"delete user {name}?", abort=True)
    _account_change(ctx, delete_user, name, done=f"user {name} deleted")


@users.command("reset-password")
@click.argument("name")
@click.option("--password-stdin", is_flag=True, help="Read the new password from the first line of stdin.")
@click.pass_context
def users_reset_password(ctx: click.Context, name: str, password_stdin: bool) -> None:
    """Set a new password; the user's sessions end and a login lock is lifted."""
    from radnode.web.auth import reset_password

    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt("New password", hide_input=True, confirmation_prompt=True)
    _account_change(ctx, reset_password, name, password, done=f"password of {name} reset; its sessions ended")


@users.command("unlock")
@click.argument("name")
@click.pass_context
def users_unlock(ctx: click.Context, name: str) -> None:
    """Lift a lock set by too many failed logins."""
    from radnode.web.auth import unlock

    _account_change(ctx, unlock, name, done=f"user {name} unlocked")


@tokens.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def tokens_list(ctx: click.Context, as_json: bool) -> None:
    """API tokens: name, role, created, last used, revoked (never the token)."""
    from radnode.web.auth import list_tokens

    def iso(ts: float | None) -> str | None:
        return None if ts is None else datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="seconds")

    with _sessions(ctx)() as s:
        rows = [
            {"name": t.name, "role": t.role, "created": iso(t.created_at), "last_used": iso(t.last_used_at), "revoked": t.revoked}
            for t in list_tokens(s)
        ]
    echo_rows(
        rows,
        as_json=as_json,
        empty="no tokens",
        render=lambda r: f"{r['name']:<24} {r['role']:<12} {'revoked' if r['revoked'] else 'active ':<8} created {r['created']}  last used {r['last_used'] or '-'}",
    )


@tokens.command("revoke")
@click.argument("name")
@click.pass_context
def tokens_revoke(ctx: click.Context, name: str) -> None:
    """Revoke a token: refused from the next request on."""
    from radnode.web.auth import revoke_token

    _account_change(ctx, revoke_token, name, done=f"token {name} revoked")
