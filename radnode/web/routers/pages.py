"""Server-rendered pages: login, jobs, a job, submit, routing, connectivity.

Each page is a thin shell over the service modules of ``radnode.web`` (jobs, results, options, pulls, routing_edit, connectivity); forms post back with
the session's CSRF token (checked by ``require``) and redirect after a change
(POST/redirect/GET), so a reload never repeats an action.
"""

from __future__ import annotations

from datetime import date
from typing import Any
from urllib.parse import urlencode

import structlog
from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from radnode.model.jobs import JobState
from radnode.routing.rules import RoutingFileError
from radnode.store.jobs import record_event
from radnode.web import (
    deps,
    errors,
    jobs,
    options,
    pulls,
    results,
    retraining,
    routing_edit,
)
from radnode.web.auth import (
    CSRF_FIELD,
    SESSION_COOKIE,
    Forbidden,
    Principal,
    SessionCodec,
    authenticate,
    require,
    resolve_principal,
    session_data,
)
from radnode.web.connectivity import run_echo

log = structlog.get_logger(__name__)
router = APIRouter(include_in_schema=False)


def render(request: Request, name: str, status: int = 200, **context: Any) -> Response:
    templates = request.app.state.templates
    try:
        principal = resolve_principal(request)
    except Exception:  # noqa: BLE001 - a bad token still gets an error page
        principal = None
    context.setdefault("notice", request.query_params.get("notice"))
    return templates.TemplateResponse(  # type: ignore[no-any-return]
        request, name, {"me": principal, "csrf": principal.csrf if principal else context.pop("csrf", None), "csrf_field": CSRF_FIELD, **context}, status_code=status
    )


def error_page(request: Request, status: int, message: str) -> Response:
    return render(request, "error.html", status=status, status_code=status, message=message)


def _redirect(path: str, notice: str | None = None) -> RedirectResponse:
    return RedirectResponse(path + (f"?{urlencode({'notice': notice})}" if notice else ""), status_code=303)


def _safe_next(target: str | None) -> str:
    """Only local paths: a login link must not bounce the user to another site."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/jobs"
    return target


# --------------------------------------------------------------------------
# Login
# --------------------------------------------------------------------------


@router.get("/login")
def login_form(request: Request, next: str | None = None) -> Response:
    codec: SessionCodec = request.app.state.sessions_codec
    data = session_data(request)
    if data and data.get("s") and resolve_principal(request) is not None:
        return RedirectResponse(_safe_next(next), status_code=303)
    if data is None:
        cookie, csrf = codec.dumps(None)
    else:
        cookie, csrf = None, data["c"]
    response = render(request, "login.html", csrf=csrf, next=_safe_next(next), error=None)
    if cookie:
        codec.set_cookie(response, cookie)
    return response


@router.post("/login")
async def login(request: Request) -> Response:
    """Check the pre-login CSRF token, the throttle, then the password; a new server-side session on success."""
    from radnode.web.auth import (
        LoginThrottled,
        ThrottlePolicy,
        check_throttle,
        create_session,
        record_login_failure,
        record_login_success,
    )

    codec: SessionCodec = request.app.state.sessions_codec
    form = await request.form()
    data = session_data(request)
    given = str(form.get(CSRF_FIELD, ""))
    import hmac

    if data is None or not given or not hmac.compare_digest(given.encode(), str(data["c"]).encode()):
        raise Forbidden("the login form expired; reload the page and try again")
    username, password = str(form.get("username", ""))[:200], str(form.get("password", ""))
    target = _safe_next(str(form.get("next", "")) or None)
    sessions = request.app.state.db
    settings = request.app.state.settings
    policy = ThrottlePolicy.from_settings(settings)
    address = request.client.host if request.client else "unknown"
    who = username[:64] or "?"

    def check() -> tuple[tuple[str, str] | None, LoginThrottled | None]:
        with sessions.begin() as s:
            try:
                check_throttle(s, policy, username, address)
            except LoginThrottled as exc:
                record_login_failure(s, policy, username, address)
                record_event(s, who, "login:throttled", detail=exc.reason, source=address)
                return None, exc
            user = authenticate(s, username, password)
            if user is None:
                record_login_failure(s, policy, username, address)
                record_event(s, who, "login:failed", source=address)
                return None, None
            record_login_success(s, user.username, address)
            record_event(s, user.username, "login", source=address)
            return create_session(s, user.username, settings.web.session_hours, address), None

    made, throttled = await run_in_threadpool(check)
    if throttled is not None:
        log.warning("login throttled", user=who, host=address, reason=throttled.reason)
        response = render(request, "login.html", status=429, csrf=data["c"], next=target, error=f"Too many failed logins. Try again in {int(throttled.retry_after) + 1} s, or ask an admin.")
        response.headers["Retry-After"] = str(int(throttled.retry_after) + 1)
        return response
    if made is None:
        log.warning("login failed", user=who, host=address)
        return render(request, "login.html", status=401, csrf=data["c"], next=target, error="Unknown user or wrong password.")
    token, csrf = made
    response = RedirectResponse(target, status_code=303)
    codec.set_cookie(response, codec.dumps_session(token, csrf))
    return response


@router.post("/logout")
async def logout(request: Request, who: Principal = Depends(require("viewer"))) -> Response:
    """End the server-side session: the cookie, even if copied, is refused from now on."""
    from radnode.web.auth import end_session

    codec: SessionCodec = request.app.state.sessions_codec
    data = session_data(request) or {}
    with request.app.state.db.begin() as s:
        if isinstance(data.get("s"), str):
            end_session(s, data["s"])
        record_event(s, who.name, "logout", source=request.client.host if request.client else None)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    codec.clear(response)
    return response


@router.get("/")
def home() -> Response:
    return RedirectResponse("/jobs", status_code=303)


# --------------------------------------------------------------------------
# Jobs
# --------------------------------------------------------------------------


def _date(value: str | None) -> date | None:
    try:
        return date.fromisoformat(value) if value else None
    except ValueError:
        return None


@router.get("/jobs")
def jobs_page(request: Request, state: str | None = None, application: str | None = None, since: str | None = None, until: str | None = None,
              critical: bool = False, _: Principal = Depends(require("viewer"))) -> Response:
    filters = {"state": state or "", "application": application or "", "since": since or "", "until": until or "", "critical": critical}
    with deps.db(request)() as s:
        rows = jobs.list_jobs(s, state=state or None, application=application or None, since=_date(since), until=_date(until), critical=critical, limit=100)
        apps = sorted(set(jobs.applications_seen(s)) | set(deps.installed_applications(request)))
    return render(request, "jobs.html", jobs=rows, filters=filters, states=[s.value for s in JobState], applications=apps)


@router.get("/jobs/{job_id}")
def job_page(request: Request, job_id: str, _: Principal = Depends(require("viewer"))) -> Response:
    with deps.db(request)() as s:
        job = jobs.job_detail(s, deps.settings(request), job_id)
    state = JobState(job["state"])
    return render(
        request,
        "job.html",
        job=job,
        can_retry=state in jobs.RETRYABLE,
        can_cancel=not state.terminal or state is JobState.NEEDS_INPUT,
    )


@router.get("/jobs/{job_id}/report.pdf")
def report_pdf(request: Request, job_id: str, who: Principal = Depends(require("viewer"))) -> Response:
    path = results.result_file(deps.settings(request), job_id, "report.pdf")
    with deps.db(request).begin() as s:  # audit: who viewed which result, from where
        record_event(s, who.name, "result:viewed", job_id=job_id[:64], detail="report.pdf", source=request.client.host if request.client else None)
    return Response(path.read_bytes(), media_type="application/pdf", headers={"Content-Disposition": 'inline; filename="report.pdf"'})


@router.get("/jobs/{job_id}/images/{name}")
def key_image(request: Request, job_id: str, name: str, _: Principal = Depends(require("viewer"))) -> Response:
    if not name or "\x00" in name or "/" in name or "\\" in name or name.startswith("."):
        raise errors.ServiceError(404, "no such image")  # a NUL or a path in the name: not ours
    path = results.result_file(deps.settings(request), job_id, name)
    if path.suffix.lower() not in (".png", ".dcm"):
        raise errors.ServiceError(404, "not an image")
    return Response(results.key_image_png(path), media_type="image/png")


@router.post("/jobs/{job_id}/retry")
def retry(request: Request, job_id: str, who: Principal = Depends(require("radiologist"))) -> Response:
    row = jobs.retry_job(deps.db(request), job_id, who.name)
    return _redirect(f"/jobs/{row['job_id']}", "Job queued again.")


@router.post("/jobs/{job_id}/cancel")
def cancel(request: Request, job_id: str, who: Principal = Depends(require("radiologist"))) -> Response:
    row = jobs.cancel_job(deps.db(request), job_id, who.name)
    return _redirect(f"/jobs/{row['job_id']}", "Job cancelled.")


@router.post("/jobs/{job_id}/flag")
async def flag(request: Request, job_id: str, who: Principal = Depends(require("radiologist"))) -> Response:
    form = await request.form()
    note = str(form.get("note", ""))[:4000]
    out = await run_in_threadpool(retraining.flag_for_retraining, deps.settings(request), deps.db(request), job_id, note, who.name)
    return _redirect(f"/jobs/{out['job_id']}", f"Flagged for retraining: {out['input_instances']} input instances copied.")


# --------------------------------------------------------------------------
# Submit
# --------------------------------------------------------------------------


def _submit_context(request: Request, accession: str, application: str, values: dict[str, Any] | None = None) -> dict[str, Any]:
    apps = deps.installed_applications(request)
    if application not in apps:
        application = apps[0] if apps else ""
    fields = options.option_fields(deps.spec(request, application).options) if application else []
    return {"accession": accession, "application": application, "applications": apps, "fields": fields, "values": values or {}, "error": None}


@router.get("/submit")
def submit_form(request: Request, accession: str = "", app: str = "", _: Principal = Depends(require("radiologist"))) -> Response:
    """The form, pre-filled from the query; it never submits by itself."""
    return render(request, "submit.html", **_submit_context(request, accession[:16], app))


@router.post("/submit")
async def submit(request: Request, who: Principal = Depends(require("radiologist"))) -> Response:
    form = {k: str(v) for k, v in (await request.form()).items()}
    ctx = _submit_context(request, form.get("accession", "")[:16], form.get("application", ""), form)
    try:
        if ctx["application"] != form.get("application"):
            raise errors.ServiceError(422, f"unknown application {form.get('application')!r}")
        chosen = options.options_from_form(deps.spec(request, ctx["application"]), form)
        out = await run_in_threadpool(
            lambda: pulls.submit_pull(
                deps.settings(request), deps.db(request), ctx["accession"], ctx["application"], chosen, who.name, runner=request.app.state.pull_runner, registry=request.app.state.registry
            )
        )
    except errors.ServiceError as exc:
        ctx["error"] = exc.message
        return render(request, "submit.html", status=exc.status, **ctx)
    return _redirect(f"/pulls/{out['pull_id']}", f"Pull {out['pull_id']} requested.")


@router.get("/pulls/{pull_id}")
def pull_page(request: Request, pull_id: int, _: Principal = Depends(require("viewer"))) -> Response:
    """The pull's progress; the page refreshes itself until the pull has a job or failed."""
    pull = pulls.get_pull(deps.db(request), pull_id)
    return render(request, "pull.html", pull=pull)


# --------------------------------------------------------------------------
# Routing (admin)
# --------------------------------------------------------------------------


def _routing_context(request: Request) -> dict[str, Any]:
    with deps.db(request)() as s:
        versions = [{"id": v.id, "created_at": v.created_at, "author": v.author, "comment": v.comment} for v in routing_edit.routing_versions(s)]
    return {"routing": routing_edit.routing_state(deps.settings(request)), "versions": versions, "issues": [], "draft": None, "comment": ""}


@router.get("/routing")
def routing_page(request: Request, _: Principal = Depends(require("admin"))) -> Response:
    return render(request, "routing.html", **_routing_context(request))


@router.post("/routing")
async def routing_save(request: Request, who: Principal = Depends(require("admin"))) -> Response:
    form = await request.form()
    text, comment = str(form.get("text", "")), str(form.get("comment", ""))[:500]
    try:
        row = routing_edit.save_routing(
            deps.settings(request), deps.db(request), deps.declared_applications(request), text, who.name, comment=comment, base_sha256=str(form.get("base_sha256", "")) or None
        )
    except RoutingFileError as exc:
        ctx = _routing_context(request) | {"issues": exc.issues, "draft": text.replace("\r\n", "\n"), "comment": comment}
        return render(request, "routing.html", status=422, **ctx)
    return _redirect("/routing", f"Saved as version {row.id}; the node picks it up within seconds.")


@router.get("/routing/versions/{version}")
def routing_diff(request: Request, version: int, _: Principal = Depends(require("admin"))) -> Response:
    with deps.db(request)() as s:
        row = routing_edit.routing_version(s, version)
        diff = routing_edit.routing_diff(deps.settings(request), s, version)
        info = {"id": row.id, "author": row.author, "created_at": row.created_at, "comment": row.comment, "text": row.text}
    return render(request, "routing_version.html", version=info, diff=diff)


@router.post("/routing/rollback/{version}")
def routing_rollback(request: Request, version: int, who: Principal = Depends(require("admin"))) -> Response:
    try:
        row = routing_edit.rollback_routing(deps.settings(request), deps.db(request), deps.declared_applications(request), version, who.name)
    except RoutingFileError as exc:
        return render(request, "routing.html", status=422, **(_routing_context(request) | {"issues": exc.issues}))
    return _redirect("/routing", f"Rolled back to version {version} (saved as version {row.id}).")


# --------------------------------------------------------------------------
# Connectivity (admin)
# --------------------------------------------------------------------------


@router.get("/connectivity")
def connectivity_page(request: Request, _: Principal = Depends(require("admin"))) -> Response:
    return render(request, "connectivity.html", peers=deps.settings(request).peers, results=None)


@router.post("/connectivity")
async def connectivity_echo(request: Request, who: Principal = Depends(require("admin"))) -> Response:
    form = await request.form()
    if "destination" in form:  # result destinations of the routing file (DICOM, DICOMweb, e-mail, HL7, FHIR)
        return await _check_destinations(request, str(form.get("destination", "")) or None, who.name)
    peer = str(form.get("peer", "")) or None
    results = await run_in_threadpool(run_echo, deps.settings(request), deps.db(request), peer, who.name)
    return render(request, "connectivity.html", peers=deps.settings(request).peers, results=results)


async def _check_destinations(request: Request, name: str | None, actor: str) -> Response:
    from radnode.web.connectivity import run_destination_checks

    checks = await run_in_threadpool(run_destination_checks, deps.settings(request), deps.db(request), name, actor)
    return render(request, "connectivity.html", peers=deps.settings(request).peers, results=None, destination_checks=checks)

