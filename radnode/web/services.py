"""What the pages and the JSON API do, in one place, so both behave alike.

Routers parse the request and call these functions; these call the job
store, the routing validator and pynetdicom. Every change is audited with the
acting user's name.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import shutil
import tempfile
import time
import types
import typing
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

import structlog
from pydantic import BaseModel
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from radnode.store import jobs as jobstore
from radnode.analyzers.registry import OptionsError, parse_options
from radnode.jobs import pull
from radnode.model.analysis import AnalyzerSpec
from radnode.jobs.commands import job_dict
from radnode.model.jobs import JobState
from radnode.routing.rules import RoutingFileError, RoutingIssue, parse_rules
from radnode.routing.setup import DEFAULT_RULES, rules_path
from radnode.settings import Settings
from radnode.store.routing_history import RoutingVersionRow

log = structlog.get_logger(__name__)

RETRYABLE = frozenset({JobState.FAILED, JobState.NEEDS_INPUT, JobState.CANCELLED, JobState.DONE})


class ServiceError(Exception):
    """A request the node refuses, with an HTTP status for the API."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def retraining_dir(settings: Settings) -> Path:
    return settings.web.retraining_dir or settings.data_dir / "retraining"


def results_dir(settings: Settings, job_id: str) -> Path:
    """Where the result writer put a job's objects (``work_dir/<job>/results``)."""
    return settings.work_dir / job_id / "results"


# --------------------------------------------------------------------------
# Jobs
# --------------------------------------------------------------------------


def _day_start(d: date) -> float:
    return datetime(d.year, d.month, d.day, tzinfo=timezone.utc).timestamp()


def list_jobs(
    session: Session,
    *,
    state: str | None = None,
    application: str | None = None,
    since: date | None = None,
    until: date | None = None,
    limit: int = 50,
) -> list[dict[str, Any]]:
    """Newest first; *since*/*until* are inclusive UTC days of creation."""
    q = select(jobstore.JobRow).order_by(jobstore.JobRow.created_at.desc()).limit(max(1, min(limit, 500)))
    if state:
        q = q.where(jobstore.JobRow.state == state)
    if application:
        q = q.where(jobstore.JobRow.application == application)
    if since:
        q = q.where(jobstore.JobRow.created_at >= _day_start(since))
    if until:
        q = q.where(jobstore.JobRow.created_at < _day_start(until) + 86400)
    return [job_dict(r) | {"accession": r.accession} for r in session.scalars(q).all()]


def applications_seen(session: Session) -> list[str]:
    return sorted(session.scalars(select(jobstore.JobRow.application).distinct()).all())


def job_detail(session: Session, settings: Settings, job_id: str) -> dict[str, Any]:
    """Everything the job page shows: the job, its stages, measurements, audit and result files."""
    try:
        row = jobstore.get_job(session, job_id)
    except jobstore.JobNotFound as exc:
        raise ServiceError(404, str(exc)) from exc
    data = job_dict(row) | {"accession": row.accession, "options": json.loads(row.options_json)}
    data["measurements"] = [{"name": m.name, "value": m.value, "unit": m.unit, "code": m.code} for m in jobstore.job_measurements(session, row.job_id)]
    data["events"] = [
        {"at": datetime.fromtimestamp(e.at, timezone.utc).isoformat(timespec="seconds"), "actor": e.actor, "action": e.action, "detail": e.detail}
        for e in jobstore.job_events(session, row.job_id)
    ]
    stages = []
    order = ("created", "queued", "preprocessing", "inferring", "writing", "sending", "finished")
    stamps = [(name, getattr(row, f"{name}_at")) for name in order]
    present = [(n, t) for n, t in stamps if t is not None]
    for i, (name, at) in enumerate(present):
        nxt = present[i + 1][1] if i + 1 < len(present) else None
        stages.append({"stage": name, "at": datetime.fromtimestamp(at, timezone.utc).isoformat(timespec="seconds"), "seconds": None if nxt is None else round(nxt - at, 1)})
    data["stages"] = stages
    data["retraining"] = [
        {"note": c.note, "flagged_by": c.flagged_by, "archive_path": c.archive_path, "at": datetime.fromtimestamp(c.created_at, timezone.utc).isoformat(timespec="seconds")}
        for c in session.scalars(select(jobstore.RetrainingCaseRow).where(jobstore.RetrainingCaseRow.job_id == row.job_id)).all()
    ]
    data["files"] = result_files(settings, row.job_id)
    return data


def result_files(settings: Settings, job_id: str) -> dict[str, Any]:
    """The report PDF and the key images (secondary captures, PNGs) the writer left for a job."""
    folder = results_dir(settings, job_id)
    out: dict[str, Any] = {"report_pdf": False, "key_images": []}
    if not folder.is_dir():
        return out
    out["report_pdf"] = (folder / "report.pdf").is_file()
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() == ".png":
            out["key_images"].append({"name": path.name, "title": path.stem})
        elif path.name.startswith("sc_") and path.suffix == ".dcm":
            title = _sc_title(path)
            if not title.startswith("Report page"):  # the report is shown whole as the PDF
                out["key_images"].append({"name": path.name, "title": title})
    return out


def _sc_title(path: Path) -> str:
    import pydicom

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["ImageComments"])
        return str(ds.get("ImageComments", path.stem))
    except Exception:  # noqa: BLE001 - a broken file still gets listed by name
        return path.stem


def result_file(settings: Settings, job_id: str, name: str) -> Path:
    """A file of the job's results folder by plain name (nothing outside it)."""
    folder = results_dir(settings, job_id).resolve()
    path = (folder / name).resolve()
    if path.parent != folder or not path.is_file():
        raise ServiceError(404, f"no result file {name!r}")
    return path


def key_image_png(path: Path) -> bytes:
    """A PNG of a key image: PNGs as they are, secondary captures rendered from their pixels."""
    if path.suffix.lower() == ".png":
        return path.read_bytes()
    import io

    import numpy as np
    import pydicom
    from PIL import Image

    ds = pydicom.dcmread(path)
    arr = ds.pixel_array
    if arr.dtype != np.uint8:
        lo, hi = float(arr.min()), float(arr.max())
        arr = ((arr - lo) / (hi - lo or 1.0) * 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _resolve_job_id(session: Session, job_id: str) -> str:
    try:
        return jobstore.get_job(session, job_id).job_id
    except jobstore.JobNotFound as exc:
        raise ServiceError(404, str(exc)) from exc


def retry_job(sessions: sessionmaker[Session], job_id: str, actor: str) -> dict[str, Any]:
    with sessions.begin() as s:
        jid = _resolve_job_id(s, job_id)
        try:
            row = jobstore.requeue(s, jid, actor=actor, reason=f"retry requested by {actor}")
        except jobstore.TransitionError as exc:
            raise ServiceError(409, str(exc)) from exc
        return job_dict(row)


def cancel_job(sessions: sessionmaker[Session], job_id: str, actor: str) -> dict[str, Any]:
    with sessions.begin() as s:
        jid = _resolve_job_id(s, job_id)
        try:
            row = jobstore.cancel(s, jid, actor=actor)
        except jobstore.TransitionError as exc:
            raise ServiceError(409, str(exc)) from exc
        return job_dict(row)


def flag_for_retraining(settings: Settings, sessions: sessionmaker[Session], job_id: str, note: str, actor: str) -> dict[str, Any]:
    """Copy a job's input series, results and a note to ``retraining_dir/<job>/``; record and audit it.

    The copy is assembled in a temporary folder and renamed into place, so the
    archive never holds half a case; flagging again replaces the earlier copy.
    """
    with sessions() as s:
        row = jobstore.get_job(s, _resolve_job_id(s, job_id))
        jid, study, series, selection = row.job_id, row.study_instance_uid, row.series, json.loads(row.selection_json)
        meta = job_dict(row)
    root = retraining_dir(settings)
    root.mkdir(parents=True, exist_ok=True)
    final = root / jid
    tmp = Path(tempfile.mkdtemp(prefix=f".{jid}.", dir=root))
    try:
        copied = 0
        for role, series_uid in series.items():
            src = settings.spool_dir / study / series_uid
            if src.is_dir():
                shutil.copytree(src, tmp / "inputs" / role)
                copied += sum(1 for _ in (tmp / "inputs" / role).iterdir())
        results = results_dir(settings, jid)
        if results.is_dir():
            shutil.copytree(results, tmp / "results")
        (tmp / "note.txt").write_text(note + ("\n" if note and not note.endswith("\n") else ""), encoding="utf-8")
        (tmp / "job.json").write_text(json.dumps(meta | {"selection": selection, "flagged_by": actor, "flagged_at": time.time()}, indent=2), encoding="utf-8")
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    with sessions.begin() as s:
        s.add(jobstore.RetrainingCaseRow(job_id=jid, note=note, flagged_by=actor, archive_path=str(final), created_at=time.time()))
        jobstore.add_flags(s, jid, ["retraining"])
        jobstore.record_event(s, actor, "flag:retraining", job_id=jid, study_instance_uid=study, detail=(note[:200] + f" ({copied} input instances)").strip())
    log.info("job flagged for retraining", job_id=jid, archive=str(final), instances=copied)
    return {"job_id": jid, "archive_path": str(final), "input_instances": copied}


# --------------------------------------------------------------------------
# Submit (pull by accession)
# --------------------------------------------------------------------------


@dataclass
class OptionField:
    """One form field derived from an application's pydantic options model."""

    name: str
    kind: str  # checkbox | select | number | text
    label: str
    default: Any
    choices: list[str] = field(default_factory=list)
    required: bool = False
    help: str = ""


def _unwrap_optional(annotation: Any) -> tuple[Any, bool]:
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return (rest[0] if len(rest) == 1 else annotation), True
    return annotation, False


def option_fields(model: type[BaseModel]) -> list[OptionField]:
    """bool → checkbox, Literal → select, int/float → number, anything else → text."""
    out = []
    for name, info in model.model_fields.items():
        annotation, optional = _unwrap_optional(info.annotation)
        default = None if info.is_required() else info.get_default(call_default_factory=True)
        label = name.replace("_", " ").capitalize()
        help_text = info.description or ""
        if annotation is bool:
            out.append(OptionField(name, "checkbox", label, bool(default), help=help_text))
        elif typing.get_origin(annotation) is typing.Literal:
            out.append(OptionField(name, "select", label, default, [str(c) for c in typing.get_args(annotation)], help=help_text))
        elif annotation in (int, float):
            out.append(OptionField(name, "number", label, default, required=not optional and info.is_required(), help=help_text))
        else:
            out.append(OptionField(name, "text", label, "" if default is None else default, required=info.is_required(), help=help_text))
    return out


def options_from_form(spec: AnalyzerSpec, form: dict[str, str]) -> dict[str, Any]:
    """Form strings → validated options (an unchecked box is False, an empty field is unset)."""
    raw: dict[str, Any] = {}
    for f in option_fields(spec.options):
        key = f"opt_{f.name}"
        if f.kind == "checkbox":
            raw[f.name] = key in form
        elif form.get(key, "") != "":
            raw[f.name] = form[key]
    return validate_options(spec, raw)


def validate_options(spec: AnalyzerSpec, raw: dict[str, Any]) -> dict[str, Any]:
    """The registry's one option check; the options as the pull records them."""
    try:
        return parse_options(spec, raw).model_dump(mode="json", exclude_defaults=True)
    except OptionsError as exc:
        raise ServiceError(422, str(exc)) from exc


def pull_dict(sessions: sessionmaker[Session], row: Any) -> dict[str, Any]:
    """A pull's progress, and its job once the study has been routed."""
    job = pull.pull_job(sessions, row)
    return {
        "pull_id": row.id,
        "state": row.state,
        "message": row.message,
        "accession": row.accession,
        "application": row.application,
        "pacs": row.pacs,
        "requested_by": row.requested_by,
        "study_instance_uid": row.study_instance_uid,
        "instances_expected": row.instances_expected,
        "instances_received": row.instances_received,
        "job_id": job.job_id if job is not None else None,
    }


def submit_pull(
    settings: Settings,
    sessions: sessionmaker[Session],
    accession: str,
    application: str,
    options: dict[str, Any],
    actor: str,
    *,
    runner: Any = None,
    pacs: str | None = None,
    registry: Any = None,
) -> dict[str, Any]:
    """Record a pull by accession (``radnode.jobs.pull``) and start it in the background.

    The pull is validated and recorded before any PACS is contacted; the
    caller gets its id at once and follows it on the pull page.
    """
    try:
        row = pull.request_pull(settings, sessions, accession, application, options, pacs, requested_by=actor, registry=registry)
    except pull.PullError as exc:
        raise ServiceError(422, str(exc)) from None
    with sessions.begin() as s:
        jobstore.record_event(s, actor, "submit", detail=f"pull {row.id}: {application} from {row.pacs}")
    if runner is not None:
        runner.submit(row.id)
    else:
        pull.start_pull(settings, sessions, row.id)
    return {"pull_id": row.id, "state": row.state, "job_id": None}


def get_pull(sessions: sessionmaker[Session], pull_id: int) -> dict[str, Any]:
    try:
        row = pull.get_pull(sessions, pull_id)
    except LookupError as exc:
        raise ServiceError(404, str(exc)) from None
    return pull_dict(sessions, row)


def pull_runner(settings: Settings, sessions: sessionmaker[Session]) -> pull.PullRunner:
    """The background runner for pulls (one per web app)."""
    return pull.PullRunner(settings, sessions)


# --------------------------------------------------------------------------
# Routing
# --------------------------------------------------------------------------


def routing_text(settings: Settings) -> str:
    return rules_path(settings).read_text(encoding="utf-8")


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def routing_state(settings: Settings) -> dict[str, Any]:
    path = rules_path(settings)
    text = path.read_text(encoding="utf-8")
    return {"path": str(path), "text": text, "sha256": _sha(text), "editable": settings.routing.rules_file is not None}


def validate_routing(text: str, settings: Settings, known: frozenset[str]) -> list[RoutingIssue]:
    try:
        parse_rules(text, known, file=str(rules_path(settings)))
    except RoutingFileError as exc:
        return exc.issues
    return []


def _write_atomically(path: Path, text: str) -> None:
    """Replace *path* in one rename (the rules watcher never reads half a file)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.chmod(tmp, path.stat().st_mode & 0o777)
        except FileNotFoundError:
            os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def save_routing(
    settings: Settings,
    sessions: sessionmaker[Session],
    known: frozenset[str],
    text: str,
    actor: str,
    *,
    comment: str = "",
    base_sha256: str | None = None,
    action: str = "routing:edit",
) -> RoutingVersionRow:
    """Validate and install new rules; raise RoutingFileError (file untouched) when invalid.

    The first web edit also records the file as it was, so the original can
    be rolled back to. *base_sha256* (the text the editor started from)
    refuses to overwrite someone else's newer edit.
    """
    path = rules_path(settings)
    if settings.routing.rules_file is None or path == DEFAULT_RULES:
        raise ServiceError(409, "routing.rules_file is not set: the packaged default rules are read-only; set routing.rules_file to edit")
    text = text.replace("\r\n", "\n")
    issues = validate_routing(text, settings, known)
    if issues:
        raise RoutingFileError(issues)
    current = path.read_text(encoding="utf-8") if path.exists() else ""
    if base_sha256 and base_sha256 != _sha(current):
        raise ServiceError(409, "the routing file changed since you opened it; reload and re-apply your edit")
    with sessions.begin() as s:
        if s.scalar(select(func.count()).select_from(RoutingVersionRow)) == 0 and current:
            s.add(RoutingVersionRow(created_at=time.time(), author="file", text=current, comment="the file before the first web edit"))
            s.flush()
        _write_atomically(path, text)
        row = RoutingVersionRow(created_at=time.time(), author=actor, text=text, comment=comment)
        s.add(row)
        s.flush()
        jobstore.record_event(s, actor, action, detail=f"version {row.id}" + (f": {comment}" if comment else ""))
        s.expunge(row)
    log.info("routing rules saved", version=row.id, author=actor)
    return row


def routing_versions(session: Session) -> list[RoutingVersionRow]:
    return list(session.scalars(select(RoutingVersionRow).order_by(RoutingVersionRow.id.desc())).all())


def routing_version(session: Session, version: int) -> RoutingVersionRow:
    row = session.get(RoutingVersionRow, version)
    if row is None:
        raise ServiceError(404, f"no routing version {version}")
    return row


def routing_diff(settings: Settings, session: Session, version: int) -> str:
    """Unified diff from *version* to the rules in force."""
    row = routing_version(session, version)
    current = routing_text(settings)
    return "".join(difflib.unified_diff(row.text.splitlines(keepends=True), current.splitlines(keepends=True), f"version {version}", "current"))


def rollback_routing(settings: Settings, sessions: sessionmaker[Session], known: frozenset[str], version: int, actor: str) -> RoutingVersionRow:
    with sessions() as s:
        text = routing_version(s, version).text
    return save_routing(settings, sessions, known, text, actor, comment=f"rollback to version {version}", action="routing:rollback")
