"""``radnode audit export``: the audit trail as JSON lines, for a SIEM or a review."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import click


def _parse_time(value: str | None) -> float | None:
    """An ISO date or date-time (UTC when no zone is given)."""
    if not value:
        return None
    try:
        dt = datetime.fromisoformat(value)
    except ValueError as exc:
        raise click.BadParameter(f"{value!r} is not an ISO date or date-time (e.g. 2026-12-01 or 2026-12-01T08:00)") from exc
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.timestamp()


@click.group("audit")
def audit() -> None:
    """The audit trail: logins, account and routing changes, associations, studies, results viewed."""


@audit.command("export")
@click.option("--since", help="First moment to include (ISO date or date-time, UTC by default).")
@click.option("--until", help="Moment to stop before (ISO date or date-time).")
@click.option("--out", type=click.File("w"), default="-", help="File to write (default stdout).")
@click.pass_context
def export_command(ctx: click.Context, since: str | None, until: str | None, out) -> None:  # type: ignore[no-untyped-def]
    """Write audit entries as JSON lines (id, time, actor, action, source, job_id, study, detail)."""
    from radnode.audit import export
    from radnode.store.db import open_store
    from radnode.store.jobs import record_event

    _, sessions = open_store(ctx.obj.settings())
    n = 0
    with sessions() as s:
        for entry in export(s, _parse_time(since), _parse_time(until)):
            out.write(json.dumps(entry, ensure_ascii=False) + "\n")
            n += 1
    with sessions.begin() as s:  # exporting the trail is itself audited
        record_event(s, "cli", "audit:export", detail=f"{n} entries since {since or 'the start'}", source="cli")


@audit.command("forward")
@click.option("--host", required=True, help="Audit repository (syslog over TLS, RFC 5425).")
@click.option("--port", type=int, default=6514, show_default=True)
@click.option("--ca-file", type=click.Path(exists=True, dir_okay=False), help="CA that signs the repository's certificate.")
@click.option("--cert-file", type=click.Path(exists=True, dir_okay=False), help="radnode's client certificate (mutual TLS).")
@click.option("--key-file", type=click.Path(exists=True, dir_okay=False))
@click.option("--follow", is_flag=True, help="Keep forwarding new entries every --interval seconds.")
@click.option("--interval", type=float, default=5.0, show_default=True)
@click.pass_context
def forward_command(ctx: click.Context, host: str, port: int, ca_file: str | None, cert_file: str | None, key_file: str | None, follow: bool, interval: float) -> None:
    """Send audit entries after the last forwarded one as DICOM audit messages (PS3.15 A.5)."""
    import time
    from pathlib import Path

    from radnode.audit import export
    from radnode.peers.syslog import forward, read_cursor, write_cursor
    from radnode.store.db import open_store
    from radnode.tls import client_context

    settings = ctx.obj.settings()
    _, sessions = open_store(settings)
    cursor = Path(settings.data_dir) / "audit_forwarded"
    context = client_context(Path(ca_file) if ca_file else None, Path(cert_file) if cert_file else None, Path(key_file) if key_file else None)
    source_id = f"radnode@{settings.ae_title}"
    while True:
        after = read_cursor(cursor)
        with sessions() as s:
            entries = [e for e in export(s) if e["id"] > after]
        if entries:
            last = forward(entries, host, port, context, source_id=source_id)
            if last is not None:
                write_cursor(cursor, last)
            click.echo(f"forwarded {len(entries)} audit entries (up to id {last})", err=True)
        if not follow:
            return
        time.sleep(interval)
