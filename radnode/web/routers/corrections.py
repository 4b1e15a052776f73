"""Series labels on a job: see what the classifier said for every series of the study, and correct it.

A correction is stored with the series' header features and audited
(``radnode.routing.corrections``); ``radnode classifier train
--with-corrections`` learns from it. Reading needs a viewer, correcting a
radiologist (with the session's CSRF token, as every change).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from radnode.store import jobs as store
from radnode.routing.classifier import SeriesClassifier
from radnode.routing.corrections import CorrectionError, correct_series, rerun_with_series, series_table
from radnode.routing.labels import LABELS
from radnode.store.corrections import CorrectionRow
from radnode.web import deps
from radnode.web.auth import Principal, require
from radnode.web.routers.pages import _redirect, error_page, render

router = APIRouter(include_in_schema=False)


def _classifier(request: Request) -> SeriesClassifier:
    """The node's classifier, loaded once per app (the same choice the router makes)."""
    clf = getattr(request.app.state, "series_classifier", None)
    if clf is None:
        from radnode.routing.setup import load_classifier

        clf = load_classifier(deps.settings(request))
        request.app.state.series_classifier = clf
    return clf


def _job(request: Request, job_id: str) -> Any:
    with deps.db(request)() as session:
        try:
            row = store.get_job(session, job_id)
        except store.JobNotFound:
            return None
        corrections = session.query(CorrectionRow).filter(CorrectionRow.study_instance_uid == row.study_instance_uid).order_by(CorrectionRow.id).all()
        latest = {c.series_instance_uid: c for c in corrections}
        return {"job_id": row.job_id, "study_instance_uid": row.study_instance_uid, "application": row.application,
                "series": row.series, "corrections": {uid: {"label": c.corrected_label, "author": c.author} for uid, c in latest.items()}}


@router.get("/jobs/{job_id}/series")
async def job_series(request: Request, job_id: str, _: Principal = Depends(require("viewer"))) -> Response:
    job = await run_in_threadpool(_job, request, job_id)
    if job is None:
        return error_page(request, 404, f"no job {job_id}")
    rows = await run_in_threadpool(series_table, deps.settings(request), _classifier(request), job["study_instance_uid"])
    roles = {uid: role for role, uid in job["series"].items()}
    return render(request, "job_series.html", job=job, rows=rows, roles=roles, labels=LABELS)


@router.post("/jobs/{job_id}/series/label")
async def correct_label(request: Request, job_id: str, who: Principal = Depends(require("radiologist"))) -> Response:
    form = await request.form()
    series_uid = str(form.get("series_instance_uid", ""))
    label = str(form.get("label", ""))
    note = str(form.get("note", ""))[:2000]
    job = await run_in_threadpool(_job, request, job_id)
    if job is None:
        return error_page(request, 404, f"no job {job_id}")
    role = next((r for r, uid in job["series"].items() if uid == series_uid), None)
    try:
        out = await run_in_threadpool(
            lambda: correct_series(deps.settings(request), deps.db(request), _classifier(request), study_instance_uid=job["study_instance_uid"],
                                   series_instance_uid=series_uid, label=label, author=who.name, job_id=job_id, role=role, note=note)
        )
    except CorrectionError as exc:
        return error_page(request, 422, str(exc))
    return _redirect(f"/jobs/{job_id}/series", f"Series corrected: {out['predicted']} → {out['corrected']}.")




@router.post("/jobs/{job_id}/series/role")
async def use_for_role(request: Request, job_id: str, who: Principal = Depends(require("radiologist"))) -> Response:
    """Pick another series for one of the job's roles and run the job again with it."""
    form = await request.form()
    series_uid = str(form.get("series_instance_uid", ""))
    role = str(form.get("role", ""))
    try:
        out = await run_in_threadpool(
            lambda: rerun_with_series(deps.settings(request), deps.db(request), _classifier(request), job_id=job_id, role=role,
                                      series_instance_uid=series_uid, author=who.name)
        )
    except CorrectionError as exc:
        return error_page(request, 422, str(exc))
    return _redirect(f"/jobs/{out['job_id']}", f"Job queued again with the series chosen for {role}.")
