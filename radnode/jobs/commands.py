"""``radnode jobs …`` and ``radnode results export``: the job store from a shell."""

from __future__ import annotations

import csv
import json
import sys
from datetime import datetime, timezone
from typing import Any

import click
from sqlalchemy import select

from radnode.cli_output import echo_rows
from radnode.store.deliveries import job_deliveries
from radnode.store import jobs as jobstore
from radnode.model.jobs import JobState, is_urgent


def _iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="seconds")


def _sessions(ctx: click.Context):  # type: ignore[no-untyped-def]
    from radnode.store.db import open_store

    settings = ctx.obj.settings()
    _, sessions = open_store(settings)
    return sessions


def job_dict(row: jobstore.JobRow) -> dict[str, Any]:
    return {
        "job_id": row.job_id,
        "study_instance_uid": row.study_instance_uid,
        "application": row.application,
        "model_version": row.model_version,
        "trigger": row.trigger,
        "state": row.state,
        "attempts": row.attempts,
        "error": row.error,
        "series": row.series,
        "selection": json.loads(row.selection_json),
        "flags": row.flags,
        "priority": row.priority,
        "urgent": is_urgent(row.priority),
        "critical": bool(row.critical),
        "critical_findings": row.critical_findings,
        "findings": row.findings,
        "superseded_by": row.superseded_by,
        "result_uids": row.result_uids,
        "destinations": json.loads(row.destinations_json),
        "deliveries": job_deliveries(row.destinations_json, row.sends_json),
        "times": {
            k: _iso(getattr(row, f"{k}_at"))
            for k in ("created", "queued", "preprocessing", "inferring", "writing", "sending", "finished")
        },
    }


@click.group("jobs")
def jobs() -> None:
    """List, inspect, retry and cancel analysis jobs."""


@jobs.command("list")
@click.option("--state", type=click.Choice([s.value for s in JobState]))
@click.option("--app", "application")
@click.option("--critical", is_flag=True, help="Only jobs whose result has a present critical finding.")
@click.option("--limit", default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def list_cmd(ctx: click.Context, state: str | None, application: str | None, critical: bool, limit: int, as_json: bool) -> None:
    """Recent jobs, newest first; a critical result says CRITICAL and its findings."""
    with _sessions(ctx)() as session:
        rows = jobstore.list_jobs(session, state=state, application=application, critical=critical, limit=limit)
        data = [job_dict(r) for r in rows]
    echo_rows(data, as_json=as_json, empty="no jobs", render=_job_lines)


def _job_lines(j: dict[str, Any]) -> list[str]:
    flag = " superseded" if j["superseded_by"] else ""
    flag += " urgent" if j["urgent"] else ""
    lines = [f"{j['job_id'][:12]}  {j['application']:<12} {j['state']:<13} attempts={j['attempts']}  {j['times']['created']}  {j['study_instance_uid']}{flag}"]
    if j["critical"]:
        lines.append(f"              CRITICAL: {', '.join(j['critical_findings'])}")
    if j["error"]:
        lines.append(f"              {j['error'][:200]}")
    return lines


@jobs.command("show")
@click.argument("job_id")
@click.pass_context
def show_cmd(ctx: click.Context, job_id: str) -> None:
    """One job with its measurements and audit trail (JSON)."""
    with _sessions(ctx)() as session:
        try:
            row = jobstore.get_job(session, job_id)
        except jobstore.JobNotFound as exc:
            raise click.ClickException(str(exc)) from exc
        data = job_dict(row)
        data["measurements"] = [{"name": m.name, "value": m.value, "unit": m.unit, "code": m.code} for m in jobstore.job_measurements(session, row.job_id)]
        data["events"] = [{"at": _iso(e.at), "actor": e.actor, "action": e.action, "detail": e.detail} for e in jobstore.job_events(session, row.job_id)]
    click.echo(json.dumps(data, indent=2))


def _change(ctx: click.Context, job_id: str, action: str) -> None:
    with _sessions(ctx).begin() as session:
        try:
            row = jobstore.requeue(session, job_id, actor="cli") if action == "retry" else jobstore.cancel(session, job_id, actor="cli")
        except (jobstore.JobNotFound, jobstore.TransitionError) as exc:
            raise click.ClickException(str(exc)) from exc
        click.echo(f"{row.job_id}: {row.state}")


@jobs.command("retry")
@click.argument("job_id")
@click.pass_context
def retry_cmd(ctx: click.Context, job_id: str) -> None:
    """Queue a failed, cancelled, done or needs-input job again."""
    _change(ctx, job_id, "retry")


@jobs.command("cancel")
@click.argument("job_id")
@click.pass_context
def cancel_cmd(ctx: click.Context, job_id: str) -> None:
    """Cancel a job that has not finished."""
    _change(ctx, job_id, "cancel")


@click.group("results")
def results() -> None:
    """Structured results for warehousing."""


@results.command("export")
@click.option("--format", "fmt", type=click.Choice(["csv", "parquet"]), default="csv", show_default=True)
@click.option("--since", type=click.DateTime(formats=["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S"]), default=None)
@click.option("--out", type=click.Path(dir_okay=False, resolve_path=True), default=None, help="Default: stdout (CSV only).")
@click.pass_context
def export_cmd(ctx: click.Context, fmt: str, since: datetime | None, out: str | None) -> None:
    """One row per measurement: job, study, application, model version, name, value, unit, code."""
    q = select(jobstore.MeasurementRow, jobstore.JobRow).join(jobstore.JobRow, jobstore.JobRow.job_id == jobstore.MeasurementRow.job_id)
    if since is not None:
        q = q.where(jobstore.MeasurementRow.created_at >= since.replace(tzinfo=since.tzinfo or timezone.utc).timestamp())
    with _sessions(ctx)() as session:
        rows = [
            {
                "job_id": j.job_id,
                "study_instance_uid": j.study_instance_uid,
                "application": j.application,
                "model_version": j.model_version,
                "state": j.state,
                "superseded": j.superseded_by is not None,
                "name": m.name,
                "value": m.value,
                "unit": m.unit,
                "code": m.code or "",
                "created_at": _iso(m.created_at),
            }
            for m, j in session.execute(q.order_by(jobstore.MeasurementRow.created_at)).all()
        ]
    with _sessions(ctx).begin() as session:  # audit (issue 14): exports are security-relevant
        jobstore.record_event(session, "cli", "results:export", detail=f"{len(rows)} measurements as {fmt} to {out or 'stdout'}", source="cli")
    columns = ["job_id", "study_instance_uid", "application", "model_version", "state", "superseded", "name", "value", "unit", "code", "created_at"]
    if fmt == "parquet":
        if not out:
            raise click.UsageError("--format parquet needs --out FILE")
        import pandas as pd

        pd.DataFrame(rows, columns=columns).to_parquet(out, index=False)
        click.echo(f"wrote {len(rows)} rows to {out}")
        return
    handle = open(out, "w", newline="") if out else sys.stdout
    try:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    finally:
        if out:
            handle.close()
