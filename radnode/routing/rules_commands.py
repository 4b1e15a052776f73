"""Command-line tools for routing files: ``radnode routing check FILE``.

``check`` prints one ``FILE:LINE:COLUMN: message`` line per problem so that
editors and CI can jump to it (the same format compilers use), and exits 1,
so a deployment script can refuse a bad file before it reaches a node.

:func:`format_decision` renders a :class:`RoutingDecision` for humans; the
``explain`` command (which needs the series classifier) builds on it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import structlog

from radnode.routing.rules import (
    DEFAULT_APPLICATIONS,
    RoutingDecision,
    RoutingFileError,
    load_rules,
)

log = structlog.get_logger(__name__)


def format_decision(decision: RoutingDecision) -> str:
    """Explain a routing decision: what runs, where it goes, and why.

    Every rule is listed in evaluation order with a mark (``+`` applied,
    ``-`` did not match, ``~`` matched but not applied) and one line per
    condition, so an admin can see exactly which condition failed.
    """
    lines: list[str] = [f"Study {decision.study_instance_uid}"]
    if not decision.matched:
        lines.append("  No rule matched: nothing will run.")
    else:
        via = " (via fallback)" if decision.used_fallback else ""
        names = ", ".join(o.rule for o in decision.matched_rules)
        lines.append(f"  Matched rules{via}: {names}")
        if decision.stopped_by:
            lines.append(f"  Evaluation stopped by rule {decision.stopped_by!r}.")
    if decision.applications:
        lines.append("  Applications:")
        for app in decision.applications:
            opts = ", ".join(f"{k}={v!r}" for k, v in app.options.items()) or "default options"
            dests = ", ".join(_describe(d) for d in app.destinations)
            unresolved = " [return_to_sender unresolved]" if any(d.symbolic for d in app.destinations) else ""
            lines.append(f"    - {app.name}: {opts}")
            lines.append(f"      results to: {dests or 'nowhere'}{unresolved}")
            if app.notify:
                lines.append(f"      critical findings also to: {', '.join(_describe(d) for d in app.notify)}")
            lines.append(f"      requested by: {', '.join(app.rules)}")
    elif decision.matched:
        lines.append("  Applications: none (the matched rules name no application).")
    lines.append("  Rules (evaluation order):")
    for outcome in decision.outcomes:
        mark = "+" if outcome.applied else ("~" if outcome.matched else "-")
        tags = [f"priority {outcome.priority}"]
        if outcome.fallback:
            tags.append("fallback")
        if outcome.note == "disabled":
            status = "disabled"
        else:
            status = "applied" if outcome.applied else ("matched, not applied" if outcome.matched else "no match")
        lines.append(f"    {mark} {outcome.rule} [{', '.join(tags)}]: {status}")
        for cond in outcome.conditions:
            ok = "ok " if cond.matched else "NO "
            lines.append(f"        {ok}{cond.condition}: {cond.reason}")
        if outcome.note and outcome.note != "disabled":
            lines.append(f"        note: {outcome.note}")
    return "\n".join(lines)


@click.group("routing")
def routing() -> None:
    """Routing rules: validate and explain."""


@routing.command("check")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path, resolve_path=True))
@click.option(
    "--application",
    "applications",
    multiple=True,
    metavar="NAME",
    help="Known application name (repeatable); defaults to the built-in set.",
)
def check(file: Path, applications: tuple[str, ...]) -> None:
    """Validate a routing FILE; print FILE:LINE:COLUMN for each problem."""
    known = set(applications) if applications else DEFAULT_APPLICATIONS
    try:
        config = load_rules(file, known)
    except RoutingFileError as exc:
        for issue in exc.issues:
            click.echo(str(issue))
        raise SystemExit(1) from None
    enabled = sum(1 for r in config.rules if r.enabled)
    extra = f" ({len(config.rules) - enabled} disabled)" if enabled != len(config.rules) else ""
    click.echo(f"OK: {len(config.rules)} rules{extra}")


@routing.command("explain")
@click.argument("study_dir", type=click.Path(exists=True, file_okay=False, path_type=Path, resolve_path=True))
@click.option("--called-ae", default=None, help="The AE title the study was sent to (default: the node's).")
@click.option("--calling-ae", default="", help="The sender's AE title.")
@click.option("--trigger", type=click.Choice(["auto", "manual", "pull"]), default=None)
@click.option("--rules", "rules_file", type=click.Path(dir_okay=False, path_type=Path, resolve_path=True), default=None, help="Try another routing file (dry run).")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def explain(ctx: click.Context, study_dir: Path, called_ae: str | None, calling_ae: str, trigger: str | None, rules_file: Path | None, as_json: bool) -> None:
    """Which rules match STUDY_DIR and why, which applications run, which series each gets."""
    import json

    from radnode.analyzers.registry import Registry
    from radnode.routing.router import Router
    from radnode.routing.setup import load_classifier, rules_path

    settings = ctx.obj.settings()
    registry = Registry.from_settings(settings)
    path = rules_file or rules_path(settings)
    try:
        config = load_rules(path, registry.declared_applications())
    except RoutingFileError as exc:
        for issue in exc.issues:
            click.echo(str(issue), err=True)
        raise SystemExit(1) from None
    router = Router(settings, sessions=None, rules=lambda: config, classifier=load_classifier(settings), registry=registry)  # type: ignore[arg-type]
    plan = router.plan(study_dir, calling_ae=calling_ae, called_ae=called_ae or settings.ae_title, trigger=trigger)
    if as_json:
        click.echo(json.dumps({
            "study_instance_uid": plan.facts.study_instance_uid,
            "matched": bool(plan.applications),
            "rules": [o.rule for o in plan.decision.matched_rules],
            "series": [
                {"series_instance_uid": s.series_instance_uid, "series_description": s.series_description,
                 "label": plan.predictions[s.series_instance_uid].label,
                 "probability": round(plan.predictions[s.series_instance_uid].probability, 4)}
                for s in plan.summaries
            ],
            "applications": [
                {"name": a.application.name, "state": "failed" if a.request.error else ("needs-input" if a.request.needs_input else "queued"),
                 "reason": a.request.error or a.request.needs_input, "series": a.request.selection,
                 "destinations": [d.model_dump() for d in a.request.destinations], "flags": list(a.request.flags)}
                for a in plan.applications
            ],
        }, indent=2))
        return
    click.echo(f"study {plan.facts.study_instance_uid}  ({len(plan.summaries)} series; rules from {path})")
    click.echo(f"facts: modalities={sorted(plan.facts.modalities)} description={plan.facts.study_description!r} body part={plan.facts.body_part!r} calling AE={plan.facts.calling_ae!r} called AE={plan.facts.called_ae!r} trigger={plan.facts.trigger}")
    click.echo("")
    click.echo("series:")
    for s in plan.summaries:
        p = plan.predictions[s.series_instance_uid]
        click.echo(f"  #{s.series_number if s.series_number is not None else '-':<4} {s.series_description[:40]:<40} -> {p.label:<9} {p.probability:.2f}")
    click.echo("")
    click.echo(format_decision(plan.decision))
    click.echo("")
    if not plan.applications:
        click.echo("no application runs for this study")
    for a in plan.applications:
        click.echo(f"application {a.application.name} (model {a.model_version}):")
        for role, chosen in a.selection.chosen.items():
            mark = "  (needs confirmation)" if chosen.needs_confirmation else ""
            desc = next((s.series_description for s in plan.summaries if s.series_instance_uid == chosen.series_instance_uid), "")
            click.echo(f"  {role:<10} <- {desc!r} p={chosen.probability:.2f}{mark}")
        if a.request.needs_input:
            click.echo(f"  needs input: {a.request.needs_input}")
        if a.request.error:
            click.echo(f"  cannot run: {a.request.error}")
        for d in a.request.destinations:
            click.echo(f"  {'critical results' if d.notify else 'results'} to {d.name}: {d.label}")
        for f in a.request.flags:
            click.echo(f"  flag: {f}")


def _describe(ref: Any) -> str:
    """``name (where)`` for a routing destination of any kind."""
    node = ref.node
    if node is None:
        return str(ref.name)
    if node.email is not None:
        where = "mailto:" + ",".join(node.email)
    else:
        where = node.url or node.hl7 or node.fhir or node.webhook or f"{node.ae_title}@{node.host}:{node.port}"
    return f"{ref.name} ({where})"


__all__ = ["check", "explain", "format_decision", "routing"]
