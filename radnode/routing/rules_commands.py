"""Command-line tools for routing files: ``radnode routing check FILE``.

``check`` prints one ``FILE:LINE:COLUMN: message`` line per problem so that
editors and CI can jump to it (the same format compilers use), and exits 1,
so a deployment script can refuse a bad file before it reaches a node.

:func:`format_decision` renders a :class:`RoutingDecision` for humans; the
``explain`` command (which needs the series classifier) builds on it.
"""

from __future__ import annotations

from pathlib import Path

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
            dests = ", ".join(
                d.name
                if d.node is None
                else f"{d.name} ({d.node.ae_title}@{d.node.host}:{d.node.port})"
                for d in app.destinations
            )
            unresolved = " [return_to_sender unresolved]" if any(d.symbolic for d in app.destinations) else ""
            lines.append(f"    - {app.name}: {opts}")
            lines.append(f"      results to: {dests or 'nowhere'}{unresolved}")
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
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
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


__all__ = ["check", "format_decision", "routing"]
