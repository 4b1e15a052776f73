"""Edit the routing file from the browser: validate, save atomically with
history, diff and roll back (the rules in force stay on any error)."""

from __future__ import annotations

import difflib
import hashlib
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import structlog
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from radnode.routing.rules import RoutingFileError, RoutingIssue, parse_rules
from radnode.routing.setup import DEFAULT_RULES, rules_path
from radnode.settings import Settings
from radnode.store import jobs as jobstore
from radnode.store.routing_history import RoutingVersionRow
from radnode.web.errors import ServiceError

log = structlog.get_logger(__name__)


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
