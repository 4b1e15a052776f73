"""Health, readiness and metrics stay open; job data needs a login or token."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from radnode.store import jobs as jobstore
from radnode.model.jobs import JobState
from radnode.store.db import open_store
from radnode.settings import Settings
from radnode.web.app import create_app


def test_health_ready_metrics_and_jobs(tmp_path: Path) -> None:
    from radnode.web.auth import add_token

    settings = Settings(data_dir=tmp_path / "data")
    _, sessions = open_store(settings)
    with sessions.begin() as s:
        job, _ = jobstore.create_job(s, jobstore.JobRequest("1.2.3", "glioma", "1", {"t1c": "1.2.3.4"}))
        jobstore.claim(s, job.job_id, "w", lease_seconds=5, take_over=False)
        jobstore.transition(s, job.job_id, JobState.INFERRING, actor="w")
    with TestClient(create_app(settings)) as client:
        assert client.get("/healthz").json()["status"] == "ok"
        assert client.get("/readyz").status_code == 200
        text = client.get("/metrics").text
        assert 'radnode_jobs{application="glioma",state="inferring"} 1.0' in text
        assert "radnode_instances_received_total 0.0" in text
        assert "radnode_queue_depth" in text and "radnode_stage_duration_seconds" in text
        # Job data is patient-related: anonymous requests are refused.
        assert client.get("/api/jobs").status_code == 401
        assert client.post("/api/jobs", json={}).status_code == 401
        with sessions.begin() as s:
            token = add_token(s, "monitor", "viewer")
        auth = {"Authorization": f"Bearer {token}"}
        jobs = client.get("/api/jobs", headers=auth).json()
        assert [j["job_id"] for j in jobs] == [job.job_id]
        assert client.get(f"/api/jobs/{job.job_id[:10]}", headers=auth).json()["state"] == "inferring"
        assert client.get("/api/jobs/ffffffffffff", headers=auth).status_code == 404
