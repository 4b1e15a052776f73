"""The ``radnode`` command. Each subcommand loads settings once, configures
logging, builds its dependencies and runs one role (listen, serve, …)."""

from __future__ import annotations

import json
import os
from typing import Any

import click
import yaml

from radnode import __version__
from radnode.cli_output import EXIT_CODES_HELP, CommandFailed, ExitCode, JsonAwareGroup, echo_rows
from radnode.logconfig import configure_logging
from radnode.settings import Settings, SettingsError, load, masked_dump


class _Ctx:
    def __init__(self, config: str | None) -> None:
        self.config = config
        self._settings: Settings | None = None

    def settings(self) -> Settings:
        """Load settings once; an invalid file ends the process with the key and reason."""
        if self._settings is None:
            try:
                self._settings = load(self.config)
            except SettingsError as exc:
                raise CommandFailed(f"invalid configuration:\n{exc}", exit_code=ExitCode.USAGE) from None
            configure_logging(self._settings.logging.level, self._settings.logging.format)
        return self._settings


pass_ctx = click.make_pass_decorator(_Ctx)


#: umask of every radnode process (issue 14): files 0640, folders 0750 at most.
FILE_UMASK = 0o027


@click.group(cls=JsonAwareGroup, context_settings={"help_option_names": ["-h", "--help"]}, epilog=EXIT_CODES_HELP)
@click.version_option(__version__, prog_name="radnode")
@click.option("--config", "config", type=click.Path(dir_okay=False, resolve_path=True), default=None, help="Settings YAML (else $RADNODE_CONFIG, else ./radnode.yaml).")
@click.pass_context
def main(ctx: click.Context, config: str | None) -> None:
    """radnode: a DICOM AI node beside your PACS.

    Receive studies (DICOM C-STORE), route them to analyses, and send
    standard DICOM results back.
    """
    # Everything radnode writes (spool, results, database, work folders) is
    # private to its user and group: patient data is never world-readable.
    os.umask(FILE_UMASK)
    # Logs go to stderr from the first line, so JSON on stdout stays clean;
    # loading settings reconfigures with the configured level and format.
    configure_logging("warning", "auto")
    ctx.obj = _Ctx(config)


@main.group("config")
def config_group() -> None:
    """Inspect the effective settings."""


@config_group.command("show")
@click.option("--json", "as_json", is_flag=True, help="JSON instead of YAML.")
@pass_ctx
def config_show(obj: _Ctx, as_json: bool) -> None:
    """Print the effective settings, secrets masked."""
    data = masked_dump(obj.settings())
    click.echo(json.dumps(data, indent=2) if as_json else yaml.safe_dump(data, sort_keys=False))


@main.command("listen")
@pass_ctx
def listen(obj: _Ctx) -> None:
    """Receive studies (C-ECHO, C-STORE), assemble them, route them to jobs.

    Jobs are published to the queue for ``radnode worker`` processes; this
    process runs no analysis.
    """
    from radnode.listener.service import ListenerService
    from radnode.routing.setup import build_router
    from radnode.analyzers.registry import Registry
    from radnode.composition import StopSignal, broker_for, make_outbox
    from radnode.store.db import open_store

    stopping = StopSignal()
    settings = obj.settings()
    engine, sessions = open_store(settings)
    registry = Registry.from_settings(settings)
    # With no broker URL there is no worker to publish to: jobs stay queued
    # in the store until `radnode serve` (or a broker) takes them.
    broker = broker_for(settings, registry.names(), registry) if settings.broker_url else None
    outbox = make_outbox(settings, sessions, broker) if broker is not None else None
    router, watcher = build_router(settings, sessions, registry, on_jobs=outbox.kick if outbox else lambda: None)
    service = ListenerService(settings, sink=router, store=(engine, sessions))
    watcher.start()
    if outbox is not None:
        outbox.start()
    service.start()
    try:
        stopping.wait()
    finally:
        service.stop()
        if outbox is not None:
            outbox.stop()
        watcher.stop()
        if broker is not None:
            broker.close()
        engine.dispose()


@main.command("serve")
@pass_ctx
def serve(obj: _Ctx) -> None:
    """Run every stage on this machine: listener, router, queue, workers, web app.

    With no broker URL set, jobs go through the embedded queue and the
    SQLite job store: nothing else to install.
    """
    from radnode.composition import Node, StopSignal

    stopping = StopSignal()
    settings = obj.settings()
    node = Node(settings, with_web=settings.web.in_serve)
    node.start()
    try:
        stopping.wait()
    finally:
        node.stop()


@main.command("worker")
@click.option("--apps", default=None, help="Comma-separated applications to serve (default: all installed).")
@click.option("--concurrency", type=click.IntRange(1, 64), default=None,
              help="Elective jobs run at once (default: settings); urgent applications get worker.urgent_concurrency threads of their own.")
@pass_ctx
def worker(obj: _Ctx, apps: str | None, concurrency: int | None) -> None:
    """Run analysis workers that consume jobs from the queue.

    Workers on several machines share RabbitMQ and the job store. Urgent
    applications (hemorrhage) have consumer threads of their own, so a long
    elective job never delays them. SIGTERM stops intake and waits for the
    running job up to the shutdown deadline; an unfinished job is redelivered.
    """
    from radnode.analyzers.registry import Registry
    from radnode.composition import StopSignal, WorkerPool, bounce_poller, broker_for, make_outbox
    from radnode.store.db import open_store
    from radnode.sr_writer.dispatch import DicomResultWriter

    stopping = StopSignal()
    settings = obj.settings()
    engine, sessions = open_store(settings)
    registry = Registry.from_settings(settings)
    chosen = [a.strip() for a in apps.split(",") if a.strip()] if apps else (settings.worker.applications or registry.names())
    if not chosen:
        raise click.ClickException("no analyzer is installed; nothing to serve")
    from radnode.analyzers.registry import RegistryError

    for app in chosen:
        try:
            registry.get(app)  # fail fast on an unknown application or a broken model
        except RegistryError as exc:
            raise click.ClickException(str(exc)) from exc
    broker = broker_for(settings, chosen, registry)
    outbox = make_outbox(settings, sessions, broker)  # retries of jobs re-queued from the web or CLI
    pool = WorkerPool(settings, sessions, broker, registry, chosen, concurrency or settings.worker.concurrency, writers=[DicomResultWriter(settings, sessions)])
    bounces = bounce_poller(settings, sessions)  # delivery.smtp.bounce_mailbox: set it for one process only
    outbox.start()
    pool.start()
    if bounces is not None:
        bounces.start()
    try:
        stopping.wait()
    finally:
        if bounces is not None:
            bounces.stop()
        pool.stop()
        outbox.stop()
        broker.close()
        engine.dispose()


@main.command("web")
@click.option("--host", default="0.0.0.0", show_default=True)
@click.option("--port", type=int, envvar="RADNODE_WEB_PORT", default=None, help="Also $RADNODE_WEB_PORT; default web.port (8080).")
@pass_ctx
def web(obj: _Ctx, host: str, port: int | None) -> None:
    """Run the web front end (login, jobs, submit, routing, connectivity) and its JSON API."""
    import uvicorn

    from radnode.web.app import create_app

    settings = obj.settings()
    from radnode.tls import uvicorn_ssl_kwargs

    uvicorn.run(create_app(settings), host=host, port=port or settings.web.port, log_level="warning", **uvicorn_ssl_kwargs(settings))


@main.command("studies")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--limit", default=50, show_default=True)
@pass_ctx
def studies(obj: _Ctx, as_json: bool, limit: int) -> None:
    """List recent studies and their state."""
    from radnode.jobs.commands import _iso
    from radnode.store.db import open_store
    from radnode.store.studies import list_studies

    engine, sessions = open_store(obj.settings())
    with sessions() as session:
        rows = list_studies(session, limit)
    engine.dispose()
    out: list[dict[str, Any]] = [
        {
            "study_instance_uid": row.study_instance_uid,
            "state": row.state,
            "generation": row.generation,
            "calling_ae": row.calling_ae,
            "called_ae": row.called_ae,
            "first_received_at": _iso(row.first_received_at),
            "last_received_at": _iso(row.last_received_at),
            "completed_at": _iso(row.completed_at),
            "completed_reason": row.completed_reason or None,
            "series": [
                {
                    "series_instance_uid": s.series_instance_uid,
                    "instances": s.instances,
                    "modality": s.modality,
                    "series_number": s.series_number,
                    "series_description": s.series_description,
                }
                for s in series
            ],
        }
        for row, series in rows
    ]
    echo_rows(out, as_json=as_json, empty="no studies", render=_study_lines)


def _study_lines(st: dict[str, Any]) -> list[str]:
    n = sum(s["instances"] for s in st["series"])
    lines = [f"{st['study_instance_uid']}  {st['state']:<9}  {len(st['series'])} series, {n} instances  from {st['calling_ae']} to {st['called_ae']}  last {st['last_received_at']}"]
    if st["state"] == "complete" and st.get("completed_reason"):
        lines.append(f"    complete: {st['completed_reason']}")
    for s in st["series"]:
        lines.append(f"    #{s['series_number'] if s['series_number'] is not None else '-':<4} {s['modality']:<3} {s['instances']:>5}  {s['series_description']}")
    return lines


def _register_optional() -> None:
    """Attach the commands that other stages contribute."""
    import importlib

    for module, names in (
        ("radnode.synth.commands", {"synth": "synth"}),
        ("radnode.commands.classifier", {"classify": "classify_command", "classifier": "classifier_group"}),
        ("radnode.routing.rules_commands", {"routing": "routing"}),
        ("radnode.jobs.commands", {"jobs": "jobs", "results": "results"}),
        ("radnode.commands.analyze", {"analyze": "analyze"}),
        ("radnode.demo", {"demo": "demo"}),
        ("radnode.jobs.pull_commands", {"pull": "pull"}),
        ("radnode.web.commands", {"users": "users", "tokens": "tokens"}),
        ("radnode.commands.destinations", {"destinations": "destinations"}),
        ("radnode.commands.audit", {"audit": "audit"}),
        ("radnode.commands.mail", {"mail": "mail"}),
    ):
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
            continue
        for name, attr in names.items():
            main.add_command(getattr(mod, attr), name)


_register_optional()

if __name__ == "__main__":  # pragma: no cover
    main()
