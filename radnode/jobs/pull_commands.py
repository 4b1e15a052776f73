"""``radnode pull ACCESSION --app APP``: fetch a study from PACS and run one application.

Why a CLI: the same service the web page uses (``radnode.jobs.pull``),
for scripts and for an admin checking that pulls work end to end. Progress
is printed as the PACS reports it (C-MOVE/C-GET pending responses); the exit
status says whether the study was retrieved (0) or not (1, with the reason).
The study itself arrives at the running listener, which routes it.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import click
import yaml


def _parse_options(pairs: tuple[str, ...]) -> dict[str, Any]:
    """``KEY=VALUE`` pairs; values are YAML scalars (``sleep=0.5`` is a number)."""
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise click.BadParameter(f"{pair!r} is not KEY=VALUE", param_hint="--option")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        if isinstance(value, (dict, list)) or value is None:
            value = raw  # a scalar was meant: keep the text
        options[key] = value
    return options


@click.command("pull")
@click.argument("accession")
@click.option("--app", "application", required=True, help="Application to run on the study.")
@click.option("--pacs", default=None, help="Name of the PACS in peers[] (default: the first peer).")
@click.option("--option", "option_pairs", multiple=True, metavar="KEY=VALUE", help="Application option (repeatable).")
@click.option("--wait", is_flag=True, help="Also wait until the study is routed and print its job.")
@click.option("--timeout", type=float, default=600.0, show_default=True, help="Seconds --wait waits for the job.")
@click.pass_context
def pull(ctx: click.Context, accession: str, application: str, pacs: str | None, option_pairs: tuple[str, ...], wait: bool, timeout: float) -> None:
    """Find ACCESSION on the PACS, retrieve the study, and run APP on it.

    The PACS must know radnode as a modality (C-MOVE destination = radnode's
    AE title) unless the peer is set to ``retrieve: get``. A listener
    (``radnode serve`` or ``listen``) must be running to receive and route
    the study.
    """
    from radnode.jobs.pull import (
        PullError,
        get_pull,
        pull_job,
        request_pull,
        run_pull,
    )
    from radnode.store.db import open_store

    settings = ctx.obj.settings()
    options = _parse_options(option_pairs)
    engine, sessions = open_store(settings)
    try:
        try:
            row = request_pull(settings, sessions, accession, application, options, pacs, requested_by="cli")
        except PullError as exc:
            click.echo(f"radnode pull: {exc}", err=True)
            sys.exit(1)
        click.echo(f"pull #{row.id}: finding accession {row.accession} on PACS {row.pacs!r}")
        shown: list[Any] = [None]

        def progress(current: Any) -> None:
            line = f"pull #{current.id}: {current.state}: {current.message}"
            if line != shown[0]:
                shown[0] = line
                click.echo(line)

        final = run_pull(settings, sessions, row.id, progress=progress)
        if final.state not in ("received", "routed"):
            click.echo(f"radnode pull: {final.message}", err=True)
            sys.exit(1)
        click.echo(f"study {final.study_instance_uid}: {final.instances_received} instances retrieved")
        if not wait:
            return
        deadline = time.monotonic() + timeout
        current = final
        while current.state != "routed":
            if current.state == "failed":
                click.echo(f"radnode pull: {current.message}", err=True)
                sys.exit(1)
            if time.monotonic() > deadline:
                click.echo(
                    f"radnode pull: the study was retrieved but not routed within {timeout:g} s — is a listener (radnode serve/listen) running?",
                    err=True,
                )
                sys.exit(1)
            time.sleep(0.25)
            current = get_pull(sessions, row.id)
        job = pull_job(sessions, current)
        if job is None:
            click.echo(f"radnode pull: routed, but no job was created ({current.message})", err=True)
            sys.exit(1)
        click.echo(f"job {job.job_id}: {job.state} ({job.application}, trigger {job.trigger})")
    finally:
        engine.dispose()
