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
    from radnode.jobs.store import record_event
    from radnode.services import open_store

    _, sessions = open_store(ctx.obj.settings())
    n = 0
    with sessions() as s:
        for entry in export(s, _parse_time(since), _parse_time(until)):
            out.write(json.dumps(entry, ensure_ascii=False) + "\n")
            n += 1
    with sessions.begin() as s:  # exporting the trail is itself audited
        record_event(s, "cli", "audit:export", detail=f"{n} entries since {since or 'the start'}", source="cli")
