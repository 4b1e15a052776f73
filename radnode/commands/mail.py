"""``radnode mail bounces``: read the bounce mailbox once and record what came back."""

from __future__ import annotations

import json
from pathlib import Path

import click


@click.group("mail")
def mail() -> None:
    """E-mail delivery: bounces that come back after a result mail was accepted."""


@mail.command("bounces")
@click.option("--maildir", type=click.Path(file_okay=False, exists=True, path_type=Path), default=None, help="A Maildir folder to read.")
@click.option("--mbox", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None, help="An mbox file to read.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def bounces(ctx: click.Context, maildir: Path | None, mbox: Path | None, as_json: bool) -> None:
    """Record delivery status notifications (RFC 3464) on their jobs.

    Reads --maildir or --mbox, else delivery.smtp.bounce_mailbox (a folder is
    a Maildir, a file an mbox). Each DSN names its job by the VERP address
    (delivery.smtp.bounce_address) or the returned X-Radnode-Job /
    Message-ID header; each recipient's Action, Status and Diagnostic-Code go
    on the job's e-mail destination and its audit trail. A DSN is recorded
    once however often this runs; mail that is not a DSN is left alone.
    """
    from radnode.jobs.bounces import BounceMailboxError, MailboxKind, read_bounces
    from radnode.store.db import open_store

    if maildir is not None and mbox is not None:
        raise click.UsageError("give --maildir or --mbox, not both")
    settings = ctx.obj.settings()
    kind: MailboxKind | None = "maildir" if maildir is not None else "mbox" if mbox is not None else None
    path = maildir or mbox or settings.delivery.smtp.bounce_mailbox
    if path is None:
        raise click.UsageError("no mailbox: give --maildir or --mbox, or set delivery.smtp.bounce_mailbox")
    engine, sessions = open_store(settings)
    try:
        scan = read_bounces(sessions, Path(path), kind=kind, bounce_address=settings.delivery.smtp.bounce_address)
    except BounceMailboxError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        engine.dispose()
    if as_json:
        click.echo(json.dumps(scan.as_dict(), indent=2))
        return
    click.echo(f"{scan.mailbox} ({scan.kind}): {scan.messages} message(s) read, {scan.not_dsn} not a DSN (left), "
               f"{scan.already_seen} handled before, {scan.recorded} bounce(s) recorded")
    for r in scan.results:
        where = f"job {r.job_id[:12]} {r.destination}" if r.job_id and r.destination else f"job {r.job_id[:12]}" if r.job_id else "no job"
        why = f" — {r.reason}" if r.reason else ""
        click.echo(f"  {r.result:<16} {where}: {r.recipient or '?'} {r.action} {r.status} {r.diagnostic}".rstrip() + why)
