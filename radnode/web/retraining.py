"""Flag a job for retraining: copy its inputs, outputs and a note into
``web.retraining_dir`` and record the case."""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import structlog
from sqlalchemy.orm import Session, sessionmaker

from radnode.jobs.commands import job_dict
from radnode.settings import Settings
from radnode.store import jobs as jobstore
from radnode.web.jobs import resolve_job_id
from radnode.web.results import results_dir

log = structlog.get_logger(__name__)


def retraining_dir(settings: Settings) -> Path:
    return settings.web.retraining_dir or settings.data_dir / "retraining"


def flag_for_retraining(settings: Settings, sessions: sessionmaker[Session], job_id: str, note: str, actor: str) -> dict[str, Any]:
    """Copy a job's input series, results and a note to ``retraining_dir/<job>/``; record and audit it.

    The copy is assembled in a temporary folder and renamed into place, so the
    archive never holds half a case; flagging again replaces the earlier copy.
    """
    with sessions() as s:
        row = jobstore.get_job(s, resolve_job_id(s, job_id))
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
