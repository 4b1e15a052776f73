"""``radnode analyze APP DIR --out OUT``: one application on a folder, offline.

Runs what a queued job runs — series classification and selection, the
analyzer, the result writers — without a PACS, a broker or a job store, so
a site can try an application (or a new model) on a study folder.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import click

from radnode.cli_output import EXIT_CODES_HELP, CommandFailed, ExitCode, stdout_to_stderr
from radnode.analyzers.base import AnalyzerError, AnalyzerInputs, SeriesInput
from radnode.analyzers.registry import OptionsError, Registry, RegistryError, parse_options


@click.command("analyze", epilog=EXIT_CODES_HELP)
@click.argument("application")
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path, resolve_path=True))
@click.option("--out", "out", type=click.Path(file_okay=False, path_type=Path, resolve_path=True), required=True)
@click.option("--json", "as_json", is_flag=True, help="Print exactly one JSON object on stdout, whatever the outcome (logs go to stderr).")
@click.option("--option", "options", multiple=True, metavar="KEY=VALUE", help="Application option (repeatable).")
@click.pass_context
def analyze(ctx: click.Context, application: str, directory: Path, out: Path, as_json: bool, options: tuple[str, ...]) -> None:
    """Run APPLICATION on the DICOM study in DIRECTORY; results go to OUT."""
    with stdout_to_stderr(as_json):
        summary, result, model = _analyze(ctx, application, directory, out, as_json, options)
    if as_json:
        click.echo(json.dumps(summary))
        return
    click.echo(f"{application} on {directory} ({summary['seconds']} s)")
    if model:
        click.echo(f"model: {model.name} {model.version}" + ("  — DEMO, NOT FOR CLINICAL USE" if model.demo else ""))
    for m in result.measurements:
        click.echo(f"  {m.name:<22} {m.value:>10.2f} {m.unit}")
    for f in result.findings:
        click.echo(f"  {f.name:<22} {'present' if f.present else 'absent'}" + (f" (p={f.probability:.2f})" if f.probability is not None else ""))
    click.echo(f"outputs in {out}")


def _analyze(ctx: click.Context, application: str, directory: Path, out: Path, as_json: bool, options: tuple[str, ...]) -> tuple[dict[str, Any], Any, Any]:
    """Select the series, run the analyzer and the writers; raise CommandFailed with what went wrong."""
    from radnode.routing.selection import select_series
    from radnode.routing.series_index import scan_series
    from radnode.routing.setup import load_classifier

    settings = ctx.obj.settings()
    registry = Registry.from_settings(settings)
    try:
        analyzer = registry.get(application)
    except RegistryError as exc:
        raise CommandFailed(str(exc), application=application) from exc
    spec = analyzer.spec
    summaries = scan_series(directory)
    if not summaries:
        raise CommandFailed(f"no DICOM series found under {directory}", application=application)
    predictions = load_classifier(settings).predict(summaries)
    selection = select_series(
        registry.roles(application),
        summaries,
        predictions,
        threshold=settings.routing.confidence_threshold,
    )
    if not selection.complete:
        lines, missing = [], []
        for m in selection.missing:
            near = ", ".join(f"{d or uid} (p={p:.2f})" for uid, d, p in m.closest_candidates[:3]) or "none"
            lines.append(f"missing role {m.role!r}; closest candidates: {near}")
            missing.append({
                "role": m.role,
                "candidates": [{"series_instance_uid": uid, "description": d, "probability": round(p, 3)} for uid, d, p in m.closest_candidates[:3]],
            })
        raise CommandFailed(
            f"{application} cannot run on {directory}: " + "; ".join(lines),
            state="needs-input", exit_code=ExitCode.NEEDS_INPUT, application=application, missing=missing,
        )
    by_uid = {s.series_instance_uid: s for s in summaries}
    parsed = {}
    for item in options:
        key, sep, value = item.partition("=")
        if not sep:
            raise click.UsageError(f"--option {item!r} must look like KEY=VALUE")
        parsed[key] = json.loads(value) if value[:1] in "[{0123456789-tfn\"" and value not in ("",) else value
    try:
        opts = parse_options(spec, parsed)
    except OptionsError as exc:
        raise CommandFailed(str(exc), exit_code=ExitCode.USAGE, application=application) from exc
    inputs = AnalyzerInputs(
        study_instance_uid=summaries[0].study_instance_uid,
        series={
            role: SeriesInput(role, c.series_instance_uid, tuple(sorted(by_uid[c.series_instance_uid].paths)), c.label, c.probability)
            for role, c in selection.chosen.items()
        },
        options=opts,
        job_id=f"offline-{application}-{summaries[0].study_instance_uid}",
    )
    out.mkdir(parents=True, exist_ok=True)
    work = out / "work"
    if work.exists():
        shutil.rmtree(work)
    work.mkdir()
    stages: dict[str, float] = {}
    started = time.perf_counter()

    def progress(stage: str) -> None:
        stages[stage] = time.perf_counter() - started
        if not as_json:
            click.echo(f"[{stages[stage]:6.1f} s] {stage}", err=True)

    try:
        result = analyzer.run(inputs, work, progress)
    except AnalyzerError as exc:
        raise CommandFailed(f"{application}: {exc}", application=application) from exc
    labels = result.extra.get("labels_nifti")
    if labels:
        shutil.copyfile(labels, out / "labels.nii.gz")
    objects: dict[str, object] = {}
    if spec.outputs:
        from radnode.sr_writer.dispatch import write_objects
        from radnode.sr_writer.writer import ResultWriteError

        try:
            written = write_objects(settings, inputs.job_id, spec, inputs, result, out)
        except (ResultWriteError, ValueError, TypeError) as exc:
            raise CommandFailed(f"{application}: writing results failed: {exc}", application=application) from exc
        objects = {k: ([str(x) for x in v] if isinstance(v, list) else (str(v) if v else None)) for k, v in written.paths.items()}
    summary = dict(result.extra.get("summary", {}))
    model = result.model_or(spec.model)
    summary["model"] = {"name": model.name, "version": model.version, "demo": model.demo} if model else None
    summary["series"] = {role: {"series_instance_uid": c.series_instance_uid, "label": c.label, "probability": round(c.probability, 3)} for role, c in selection.chosen.items()}
    summary["flags"] = result.flags
    summary["objects"] = objects
    summary["seconds"] = round(time.perf_counter() - started, 2)
    summary["state"] = "done"
    (out / "result.json").write_text(json.dumps(summary, indent=2))
    return summary, result, model
