"""The web app's auth, CSRF, role checks and actions, over a real SQLite store.

Every state-changing endpoint is tried anonymously, with too small a role,
and by cookie without the CSRF token; the actions that are allowed are
checked for their effect on the store, the disk and the audit trail.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path
from typing import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from radnode.store import jobs as jobstore
from radnode.model.jobs import JobState
from radnode.routing.setup import DEFAULT_RULES
from radnode.store.db import open_store
from radnode.settings import Settings
from radnode.store.accounts import UserRow
from radnode.store.routing_history import RoutingVersionRow
from radnode.web.app import create_app
from radnode.web.auth import add_token, add_user
from tests.support.ports import free_port

PASSWORD = "correct horse battery"
CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    rules = tmp_path / "routing.yaml"
    shutil.copy(DEFAULT_RULES, rules)
    return Settings(
        data_dir=tmp_path / "data",
        routing={"rules_file": str(rules)},
        web={"secure_cookies": False, "session_secret": "test-secret-0123456789"},
        peers=[{"name": "nowhere", "ae_title": "NOWHERE", "host": "127.0.0.1", "port": free_port()}],
    )


@pytest.fixture
def app_client(settings: Settings) -> Iterator[TestClient]:
    _, sessions = open_store(settings)
    with sessions.begin() as s:
        for name, role in (("vera", "viewer"), ("rad", "radiologist"), ("adam", "admin")):
            add_user(s, name, PASSWORD, role, actor="test")
    with TestClient(create_app(settings)) as client:
        yield client


def sessions_of(settings: Settings):  # type: ignore[no-untyped-def]
    return open_store(settings)[1]


def login(client: TestClient, user: str) -> str:
    """Log in through the form like a browser; return the session's CSRF token."""
    client.cookies.clear()
    page = client.get("/login")
    token = CSRF_RE.search(page.text).group(1)  # type: ignore[union-attr]
    r = client.post("/login", data={"username": user, "password": PASSWORD, "csrf_token": token, "next": "/jobs"}, follow_redirects=False)
    assert r.status_code == 303, r.text
    jobs = client.get("/jobs")
    assert jobs.status_code == 200
    return CSRF_RE.search(jobs.text).group(1)  # type: ignore[union-attr]


def make_job(settings: Settings, state: JobState = JobState.FAILED, study: str = "1.2.3") -> str:
    with sessions_of(settings).begin() as s:
        job, _ = jobstore.create_job(s, jobstore.JobRequest(study, "glioma", "1", {"t1c": f"{study}.4"}, accession="ACC1", selection={"t1c": {"label": "T1c", "probability": 0.93}}))
        if state is not JobState.QUEUED:
            jobstore.transition(s, job.job_id, state, actor="test", error="boom" if state is JobState.FAILED else None)
        return job.job_id


def audit(settings: Settings, action: str) -> list[jobstore.AuditRow]:
    with sessions_of(settings)() as s:
        return list(s.scalars(select(jobstore.AuditRow).where(jobstore.AuditRow.action == action)).all())


def state_changing(job_id: str) -> list[tuple[str, str, dict | None]]:  # type: ignore[type-arg]
    """(method, path, json) of every state-changing API endpoint and the minimum role."""
    return [
        ("POST", "/api/jobs", {"accession": "A1", "application": "glioma"}),
        ("POST", f"/api/jobs/{job_id}/retry", None),
        ("POST", f"/api/jobs/{job_id}/cancel", None),
        ("POST", f"/api/jobs/{job_id}/flag", {"note": "x"}),
        ("PUT", "/api/routing", {"text": "version: 1\nrules: []\n"}),
        ("POST", "/api/routing/rollback/1", None),
        ("POST", "/api/connectivity/echo", {}),
    ]


RADIOLOGIST_ONLY = {"/api/jobs", "retry", "cancel", "flag"}


def test_anonymous_is_refused_everywhere(app_client: TestClient, settings: Settings) -> None:
    job_id = make_job(settings)
    for method, path, body in state_changing(job_id):
        r = app_client.request(method, path, json=body)
        assert r.status_code == 401, (method, path, r.status_code, r.text)
        assert r.headers["www-authenticate"] == "Bearer"
    # Reads need a login too; health and metrics stay open for probes.
    assert app_client.get("/api/jobs").status_code == 401
    assert app_client.get(f"/api/jobs/{job_id}").status_code == 401
    assert app_client.get("/api/routing").status_code == 401
    assert app_client.get("/healthz").status_code == 200
    assert app_client.get("/readyz").status_code == 200
    assert app_client.get("/metrics").status_code == 200
    # Pages send an anonymous browser to the login page, keeping where it wanted to go.
    r = app_client.get("/submit?accession=A1&app=glioma", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/login?next=%2Fsubmit%3Faccession%3DA1")
    r = app_client.post(f"/jobs/{job_id}/retry", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/login")
    with sessions_of(settings)() as s:
        assert jobstore.get_job(s, job_id).state == "failed"


def test_wrong_roles_are_refused(app_client: TestClient, settings: Settings) -> None:
    job_id = make_job(settings)
    for user in ("vera", "rad"):
        csrf = login(app_client, user)
        for method, path, body in state_changing(job_id):
            allowed = user == "rad" and (path == "/api/jobs" or path.rsplit("/", 1)[-1] in RADIOLOGIST_ONLY)
            if allowed:
                continue
            r = app_client.request(method, path, json=body, headers={"X-CSRF-Token": csrf})
            assert r.status_code == 403, (user, method, path, r.status_code, r.text)
    # Pages: a viewer sees jobs but not the submit form or routing; a radiologist not routing.
    login(app_client, "vera")
    assert app_client.get("/jobs").status_code == 200
    assert app_client.get(f"/jobs/{job_id}").status_code == 200
    assert app_client.get("/submit").status_code == 403
    assert app_client.get("/routing").status_code == 403
    login(app_client, "rad")
    assert app_client.get("/submit").status_code == 200
    assert app_client.get("/routing").status_code == 403
    assert app_client.get("/connectivity").status_code == 403
    with sessions_of(settings)() as s:
        assert jobstore.get_job(s, job_id).state == "failed"


def test_csrf_is_enforced_for_cookie_sessions(app_client: TestClient, settings: Settings) -> None:
    job_id = make_job(settings)
    csrf = login(app_client, "adam")
    # JSON without the header, with a wrong one, and a form without the hidden field: all refused.
    assert app_client.post(f"/api/jobs/{job_id}/retry").status_code == 403
    assert app_client.post(f"/api/jobs/{job_id}/retry", headers={"X-CSRF-Token": "nope"}).status_code == 403
    assert app_client.post(f"/jobs/{job_id}/retry", data={}, follow_redirects=False).status_code == 403
    assert app_client.post(f"/jobs/{job_id}/retry", data={"csrf_token": "nope"}, follow_redirects=False).status_code == 403
    assert app_client.put("/api/routing", json={"text": "version: 1\nrules: []\n"}).status_code == 403
    assert app_client.post("/logout", follow_redirects=False).status_code == 403
    with sessions_of(settings)() as s:
        assert jobstore.get_job(s, job_id).state == "failed"
    # With the token, the same requests work.
    r = app_client.post(f"/jobs/{job_id}/retry", data={"csrf_token": csrf}, follow_redirects=False)
    assert r.status_code == 303
    with sessions_of(settings)() as s:
        assert jobstore.get_job(s, job_id).state == "queued"
    # The login form itself carries a CSRF token bound to the pre-login cookie.
    app_client.cookies.clear()
    app_client.get("/login")
    r = app_client.post("/login", data={"username": "adam", "password": PASSWORD, "csrf_token": "forged"}, follow_redirects=False)
    assert r.status_code == 403


def test_session_cookie_attributes_and_logout(app_client: TestClient, settings: Settings) -> None:
    app_client.get("/login")
    page = app_client.get("/login")
    token = CSRF_RE.search(page.text).group(1)  # type: ignore[union-attr]
    r = app_client.post("/login", data={"username": "adam", "password": PASSWORD, "csrf_token": token}, follow_redirects=False)
    cookie = r.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=lax" in cookie and "max-age=43200" in cookie
    assert "secure" not in cookie  # web.secure_cookies is off in this test
    # A new session gets a new CSRF token (no fixation through the login form).
    csrf = CSRF_RE.search(app_client.get("/jobs").text).group(1)  # type: ignore[union-attr]
    assert csrf != token
    # Wrong password: refused, audited, no session.
    app_client.cookies.clear()
    page = app_client.get("/login")
    token = CSRF_RE.search(page.text).group(1)  # type: ignore[union-attr]
    r = app_client.post("/login", data={"username": "adam", "password": "wrong-password", "csrf_token": token}, follow_redirects=False)
    assert r.status_code == 401 and "wrong password" in r.text
    assert audit(settings, "login:failed")
    # Logout ends the session.
    csrf = login(app_client, "adam")
    assert app_client.post("/logout", data={"csrf_token": csrf}, follow_redirects=False).status_code == 303
    assert app_client.get("/api/jobs").status_code == 401
    # A tampered cookie is no session.
    app_client.cookies.set("radnode_session", "eyJ1IjoiYWRhbSJ9.forged.sig")
    assert app_client.get("/api/jobs").status_code == 401


def test_secure_cookie_flag_is_the_default(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    with TestClient(create_app(settings), base_url="https://testserver") as client:
        r = client.get("/login")
        assert "secure" in r.headers["set-cookie"].lower()
    secret = tmp_path / "data" / "web_secret"
    assert secret.stat().st_mode & 0o777 == 0o600
    assert len(secret.read_text()) >= 40


def test_passwords_and_tokens_are_stored_hashed(app_client: TestClient, settings: Settings) -> None:
    with sessions_of(settings).begin() as s:
        user = s.scalars(select(UserRow).where(UserRow.username == "adam")).one()
        assert user.password_hash.startswith("$argon2id$") and PASSWORD not in user.password_hash
        token = add_token(s, "ci", "radiologist")
    from radnode.store.accounts import ApiTokenRow

    with sessions_of(settings)() as s:
        row = s.scalars(select(ApiTokenRow).where(ApiTokenRow.name == "ci")).one()
        assert row.token_hash.startswith("$argon2id$") and token not in row.token_hash and token[3:19] not in row.lookup


def test_token_auth_needs_no_csrf_and_respects_roles(app_client: TestClient, settings: Settings) -> None:
    job_id = make_job(settings)
    with sessions_of(settings).begin() as s:
        rad = add_token(s, "pipeline", "radiologist")
        viewer = add_token(s, "dashboard", "viewer")
    app_client.cookies.clear()
    assert app_client.get("/api/jobs", headers={"Authorization": f"Bearer {viewer}"}).status_code == 200
    assert app_client.post(f"/api/jobs/{job_id}/retry", headers={"Authorization": f"Bearer {viewer}"}).status_code == 403
    assert app_client.post(f"/api/jobs/{job_id}/retry", headers={"Authorization": "Bearer rn_wrong"}).status_code == 401
    assert app_client.post(f"/api/jobs/{job_id}/retry", headers={"Authorization": f"Basic {rad}"}).status_code == 401
    r = app_client.post(f"/api/jobs/{job_id}/retry", headers={"Authorization": f"Bearer {rad}"})
    assert r.status_code == 200 and r.json()["state"] == "queued"
    assert app_client.put("/api/routing", json={"text": "x"}, headers={"Authorization": f"Bearer {rad}"}).status_code == 403
    events = [e for e in audit(settings, "state:queued") if e.job_id == job_id]
    assert events and events[-1].actor == "token:pipeline"


def test_retry_cancel_flag_work_and_are_audited(app_client: TestClient, settings: Settings) -> None:
    failed = make_job(settings, JobState.FAILED, "1.2.3")
    queued = make_job(settings, JobState.QUEUED, "1.2.5")
    # Inputs in the spool and results in the work folder, as listener and writer leave them.
    series = settings.spool_dir / "1.2.3" / "1.2.3.4"
    series.mkdir(parents=True)
    for i in range(3):
        (series / f"1.2.3.4.{i}.dcm").write_bytes(b"DICM")
    results = settings.work_dir / failed / "results"
    results.mkdir(parents=True)
    (results / "report.pdf").write_bytes(b"%PDF-1.4 test")
    (results / "key.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    csrf = login(app_client, "rad")
    h = {"X-CSRF-Token": csrf}

    r = app_client.post(f"/api/jobs/{queued}/cancel", headers=h)
    assert r.status_code == 200 and r.json()["state"] == "cancelled"
    assert app_client.post(f"/api/jobs/{queued}/cancel", headers=h).status_code == 409  # already cancelled
    r = app_client.post(f"/api/jobs/{failed}/flag", json={"note": "missed the enhancing rim"}, headers=h)
    assert r.status_code == 200, r.text
    archive = Path(r.json()["archive_path"])
    assert archive == settings.data_dir / "retraining" / failed
    assert sorted(p.name for p in (archive / "inputs" / "t1c").iterdir()) == [f"1.2.3.4.{i}.dcm" for i in range(3)]
    assert (archive / "results" / "report.pdf").read_bytes() == b"%PDF-1.4 test"
    assert (archive / "note.txt").read_text() == "missed the enhancing rim\n"
    assert json.loads((archive / "job.json").read_text())["flagged_by"] == "rad"
    r = app_client.post(f"/api/jobs/{failed}/retry", headers=h)
    assert r.status_code == 200 and r.json()["state"] == "queued"
    assert app_client.post("/api/jobs/ffffffffffff/retry", headers=h).status_code == 404

    with sessions_of(settings)() as s:
        case = s.scalars(select(jobstore.RetrainingCaseRow)).one()
        assert (case.job_id, case.flagged_by, case.note) == (failed, "rad", "missed the enhancing rim")
        assert "retraining" in jobstore.get_job(s, failed).flags
    assert [(e.actor, e.job_id) for e in audit(settings, "state:cancelled")] == [("rad", queued)]
    assert [(e.actor, e.job_id) for e in audit(settings, "flag:retraining")] == [("rad", failed)]
    assert ("rad", failed) in [(e.actor, e.job_id) for e in audit(settings, "state:queued")]

    # The job as the page and API show it: stages, selection, log, result files.
    detail = app_client.get(f"/api/jobs/{failed}").json()
    assert detail["selection"]["t1c"]["probability"] == 0.93
    assert [st["stage"] for st in detail["stages"]][:2] == ["created", "queued"]
    assert {e["action"] for e in detail["events"]} >= {"created", "state:failed", "flag:retraining", "state:queued"}
    assert detail["files"] == {"report_pdf": True, "key_images": [{"name": "key.png", "title": "key"}], "lesion_thumbnails": {}}
    pdf = app_client.get(f"/jobs/{failed}/report.pdf")
    assert pdf.headers["content-type"] == "application/pdf" and pdf.headers["content-disposition"].startswith("inline")
    assert app_client.get(f"/jobs/{failed}/images/..%2F..%2Fradnode.sqlite3").status_code == 404
    page = app_client.get(f"/jobs/{failed}")
    assert "missed the enhancing rim" in page.text and 'src="/jobs/' in page.text and "0.93" in page.text


def test_routing_edit_validation_history_and_rollback(app_client: TestClient, settings: Settings) -> None:
    rules = Path(str(settings.routing.rules_file))
    original = rules.read_text()
    csrf = login(app_client, "adam")
    h = {"X-CSRF-Token": csrf}
    # An invalid edit: refused with its line number, the file on disk unchanged.
    bad = original.replace("applications: [glioma]", "applications: [no-such-app]")
    r = app_client.put("/api/routing", json={"text": bad}, headers=h)
    assert r.status_code == 422
    line = bad.splitlines().index("    applications: [no-such-app]") + 1
    assert any(i["line"] == line and "no-such-app" in i["message"] for i in r.json()["issues"]), r.json()
    assert rules.read_text() == original
    # The page shows the same, and keeps the draft in the editor.
    r = app_client.post("/routing", data={"csrf_token": csrf, "text": bad})
    assert r.status_code == 422 and f"line {line}, column" in r.text and "no-such-app" in r.text
    assert rules.read_text() == original
    # A valid edit is installed; the first edit also records the original file.
    edited = original.replace("body_part: \"(?i)head|brain\"", "body_part: \"(?i)head\"")
    base = app_client.get("/api/routing").json()["sha256"]
    r = app_client.put("/api/routing", json={"text": edited, "comment": "head only", "base_sha256": base}, headers=h)
    assert r.status_code == 200, r.text
    assert rules.read_text() == edited
    versions = app_client.get("/api/routing/versions").json()
    assert [(v["author"], v["comment"]) for v in versions] == [("adam", "head only"), ("file", "the file before the first web edit")]
    # A stale editor cannot overwrite the newer rules.
    assert app_client.put("/api/routing", json={"text": original, "base_sha256": base}, headers=h).status_code == 409
    # The diff page shows the change; rollback restores the older version.
    diff = app_client.get(f"/routing/versions/{versions[1]['id']}")
    assert '-      body_part: &#34;(?i)head|brain&#34;' in diff.text
    r = app_client.post(f"/api/routing/rollback/{versions[1]['id']}", headers=h)
    assert r.status_code == 200
    assert rules.read_text() == original
    assert app_client.post("/api/routing/rollback/999", headers=h).status_code == 404
    assert [e.actor for e in audit(settings, "routing:edit")] == ["adam"]
    assert [e.actor for e in audit(settings, "routing:rollback")] == ["adam"]
    with sessions_of(settings)() as s:
        assert s.scalars(select(RoutingVersionRow).order_by(RoutingVersionRow.id.desc())).first().text == original  # type: ignore[union-attr]


def test_packaged_default_rules_are_read_only(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", web={"secure_cookies": False})
    _, sessions = open_store(settings)
    with sessions.begin() as s:
        add_user(s, "adam", PASSWORD, "admin")
    before = DEFAULT_RULES.read_text()
    with TestClient(create_app(settings)) as client:
        csrf = login(client, "adam")
        r = client.put("/api/routing", json={"text": before}, headers={"X-CSRF-Token": csrf})
        assert r.status_code == 409 and "rules_file" in r.json()["detail"]
    assert DEFAULT_RULES.read_text() == before


def test_submit_prefills_and_pulls_by_accession(app_client: TestClient, settings: Settings) -> None:
    csrf = login(app_client, "rad")
    page = app_client.get("/submit?accession=ACC42&app=glioma")
    assert page.status_code == 200
    assert 'name="accession" value="ACC42"' in page.text
    assert 'name="opt_bias_field_correct"' in page.text and 'type="checkbox"' in page.text
    assert '<option value="template"' in page.text  # Literal → select
    with sessions_of(settings)() as s:
        assert audit(settings, "submit") == [] and jobstore.list_jobs(s) == []
    # Invalid options are refused before anything is asked of PACS.
    r = app_client.post("/api/jobs", json={"accession": "ACC42", "application": "glioma", "options": {"brain_extraction": "magic"}}, headers={"X-CSRF-Token": csrf})
    assert r.status_code == 422 and "brain_extraction" in r.json()["detail"]
    assert app_client.post("/api/jobs", json={"accession": "ACC42", "application": "nope"}, headers={"X-CSRF-Token": csrf}).status_code == 422
    assert app_client.post("/api/jobs", json={"accession": "A*", "application": "glioma"}, headers={"X-CSRF-Token": csrf}).status_code == 422
    # A valid request is recorded at once (202 + pull id) and runs in the background; the
    # configured PACS is down here, so the pull fails with a diagnosis a human can act on.
    r = app_client.post("/api/jobs", json={"accession": "ACC42", "application": "glioma", "options": {"brain_extraction": "template"}}, headers={"X-CSRF-Token": csrf})
    assert r.status_code == 202, r.text
    pull_id = r.json()["pull_id"]
    assert [(e.actor, e.detail) for e in audit(settings, "submit")] == [("rad", f"pull {pull_id}: glioma from nowhere")]
    deadline = time.monotonic() + 30
    while (pull := app_client.get(f"/api/pulls/{pull_id}").json())["state"] != "failed" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert pull["state"] == "failed" and pull["requested_by"] == "rad" and pull["accession"] == "ACC42", pull
    # Nothing listens on the peer's port: the message names the peer and says the connection was refused
    # (not a rejected association, a timeout or a missing study).
    assert "nowhere" in pull["message"] and "could not connect" in pull["message"] and "connection refused" in pull["message"], pull
    # The form does the same and sends the browser to the pull's page.
    r = app_client.post("/submit", data={"csrf_token": csrf, "accession": "ACC43", "application": "glioma", "opt_brain_extraction": "template"}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/pulls/")
    page = app_client.get(r.headers["location"])
    assert page.status_code == 200 and "ACC43" in page.text


def test_connectivity_echo_diagnoses(app_client: TestClient, settings: Settings, listener) -> None:  # type: ignore[no-untyped-def]
    from radnode.settings import DicomPeer
    from radnode.web.connectivity import echo_peer

    csrf = login(app_client, "adam")
    r = app_client.post("/api/connectivity/echo", json={}, headers={"X-CSRF-Token": csrf})
    assert r.status_code == 200
    [result] = r.json()
    # The same sentence a pull or a send reads for this fault (radnode.peers.dicom.diagnose).
    assert not result["ok"] and result["diagnosis"].startswith("could not connect to PACS ") and ": connection refused" in result["diagnosis"]
    assert app_client.post("/api/connectivity/echo", json={"peer": "x"}, headers={"X-CSRF-Token": csrf}).status_code == 404
    assert audit(settings, "connectivity:echo")[0].actor == "adam"
    port = listener.settings.port
    ok = echo_peer(settings, DicomPeer(name="self", ae_title="RADNODE", host="127.0.0.1", port=port))
    assert ok["ok"] and ok["status"] == "0x0000"
    wrong = echo_peer(settings, DicomPeer(name="self", ae_title="WRONGAE", host="127.0.0.1", port=port))
    assert not wrong["ok"] and "called AE title 'WRONGAE' not recognised" in wrong["diagnosis"], wrong
