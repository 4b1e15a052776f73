"""`radnode jobs …` and `radnode results export` on a real store."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from radnode.cli import main
from radnode.store import jobs as jobstore
from radnode.model.jobs import JobState
from radnode.store.db import open_store
from radnode.settings import Settings


@pytest.fixture
def populated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    for key in [k for k in __import__("os").environ if k.startswith("RADNODE_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("RADNODE_DATA_DIR", str(tmp_path / "data"))
    settings = Settings(data_dir=tmp_path / "data")
    engine, sessions = open_store(settings)
    with sessions.begin() as s:
        done, _ = jobstore.create_job(s, jobstore.JobRequest("1.2.3", "glioma", "0.1", {"t1c": "1.2.3.1"}))
        jobstore.claim(s, done.job_id, "w", lease_seconds=5, take_over=False)
        jobstore.transition(s, done.job_id, JobState.WRITING, actor="w")
        jobstore.add_measurements(s, done.job_id, [("whole_tumor", 31.5, "mL", "118565006|SCT|Volume"), ("enhancing", 9.25, "mL", None)])
        jobstore.transition(s, done.job_id, JobState.DONE, actor="w")
        queued, _ = jobstore.create_job(s, jobstore.JobRequest("1.2.4", "metastasis", "0.1", {"t1c": "1.2.4.1"}))
    yield done.job_id, queued.job_id
    engine.dispose()


def test_list_show_cancel_retry(populated) -> None:  # type: ignore[no-untyped-def]
    done, queued = populated
    runner = CliRunner()
    res = runner.invoke(main, ["jobs", "list", "--json"])
    assert res.exit_code == 0, res.output
    assert {j["job_id"]: j["state"] for j in json.loads(res.output)} == {done: "done", queued: "queued"}
    res = runner.invoke(main, ["jobs", "list", "--state", "done", "--json"])
    assert [j["job_id"] for j in json.loads(res.output)] == [done]
    shown = json.loads(runner.invoke(main, ["jobs", "show", done[:8]]).output)
    assert [m["name"] for m in shown["measurements"]] == ["whole_tumor", "enhancing"]
    assert [e["action"] for e in shown["events"]][:2] == ["created", "state:preprocessing"]
    assert runner.invoke(main, ["jobs", "cancel", queued]).exit_code == 0
    again = runner.invoke(main, ["jobs", "cancel", queued])
    assert again.exit_code != 0 and "cannot go from cancelled to cancelled" in again.output
    assert runner.invoke(main, ["jobs", "retry", queued]).exit_code == 0
    assert "no job" in runner.invoke(main, ["jobs", "show", "ffff0000"]).output


def test_results_export_csv_and_parquet(populated, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    done, _ = populated
    runner = CliRunner()
    res = runner.invoke(main, ["results", "export", "--format", "csv"])
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader(io.StringIO(res.output)))
    assert [(r["job_id"], r["name"], float(r["value"]), r["unit"]) for r in rows] == [
        (done, "whole_tumor", 31.5, "mL"),
        (done, "enhancing", 9.25, "mL"),
    ]
    out = tmp_path / "m.parquet"
    assert runner.invoke(main, ["results", "export", "--format", "parquet", "--out", str(out)]).exit_code == 0
    frame = pd.read_parquet(out)
    assert list(frame["name"]) == ["whole_tumor", "enhancing"] and frame["application"].tolist() == ["glioma", "glioma"]
    future = runner.invoke(main, ["results", "export", "--since", "2999-01-01"])
    assert future.output.strip().splitlines() == [",".join(["job_id", "study_instance_uid", "application", "model_version", "state", "superseded", "name", "value", "unit", "code", "created_at"])]
