"""``radnode destinations check``: test every result destination of the
routing file from the command line, as the connectivity page does."""

from __future__ import annotations

import json

import click


@click.group("destinations")
def destinations() -> None:
    """Result destinations of the routing file (DICOM, DICOMweb, e-mail, HL7, FHIR)."""


@destinations.command("check")
@click.argument("name", required=False)
@click.option("--timeout", default=5.0, show_default=True, help="Seconds per check.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def check(ctx: click.Context, name: str | None, timeout: float, as_json: bool) -> None:
    """C-ECHO / QIDO-RS / SMTP EHLO+STARTTLS+AUTH / MLLP connect / FHIR /metadata; exit 1 if any fails."""
    from radnode.routing.rules import RoutingFileError
    from radnode.web.connectivity import check_destinations

    settings = ctx.obj.settings()
    try:
        results = check_destinations(settings, name, timeout)
    except (LookupError, RoutingFileError) as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        click.echo(json.dumps(results, indent=2))
    else:
        for r in results:
            click.echo(f"{'ok    ' if r['ok'] else 'FAILED'} {r['destination']:<20} {r['kind']:<8} {r['label']}  {r['diagnosis']} ({r['ms']} ms)")
    if not all(r["ok"] for r in results):
        ctx.exit(1)
