"""`radnode serve` on one machine with the embedded queue and SQLite:
PACS → listener → router → queue → worker → measurements, through real
DICOM peers; crash recovery and poison jobs without a broker."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from radnode.store import jobs as jobstore
from radnode.store.db import open_store
from radnode.synth.mr_study import generate_mr_study
from tests.conftest import wait_for_port, wait_until
from tests.integration.jobs_support import REPO, add_job, node_env, settings_from_env, spool_study, wait_state
from tests.support import dcmtk
from tests.support.ports import free_port

RULES = """\
version: 1
defaults:
  destinations: [return_to_sender]
rules:
  - name: brain-mr-count
    match:
      modalities: [MR]
      not: {{study_description: "(?i)spine"}}
    applications:
      - name: count-test
        options: {{marker: "{marker}", sleep: {sleep}}}
  - name: ct-nothing
    match: {{modalities: [CT]}}
    applications: []
"""


class Serve:
    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env, self.log = env, log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> "Serve":
        with open(self.log, "ab") as fh:
            self.proc = subprocess.Popen([sys.executable, "-m", "radnode.cli", "serve"], env=self.env, stdout=fh, stderr=fh, cwd=REPO)
        wait_for_port(int(self.env["RADNODE_PORT"]), proc=self.proc, log=self.log, timeout=60)
        return self

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def stop(self) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.terminate()
        return self.proc.wait(60)


def _env(tmp_path: Path, sleep: float = 0.0) -> tuple[dict[str, str], Path]:
    marker = tmp_path / "runs.txt"
    rules = tmp_path / "routing.yaml"
    rules.write_text(RULES.format(marker=marker, sleep=sleep))
    env = node_env(
        tmp_path / "data",
        broker=False,
        RADNODE_PORT=str(free_port()),
        RADNODE_QUIET_SECONDS="1",
        RADNODE_LISTENER__ASSEMBLY_INTERVAL="0.2",
        RADNODE_ROUTING__RULES_FILE=str(rules),
        RADNODE_PEERS=json.dumps([{"name": "pacs", "ae_title": "PACS1", "host": "127.0.0.1", "port": 104}]),
    )
    return env, marker


def test_a_study_sent_by_dcmtk_is_routed_classified_and_analyzed(tmp_path: Path) -> None:
    env, marker = _env(tmp_path)
    settings = settings_from_env(env)
    node = Serve(env, tmp_path / "serve.log").start()
    try:
        study = generate_mr_study(tmp_path / "study", seed=6, rows=32, columns=32, slices=6)
        res = dcmtk.storescu("127.0.0.1", settings.port, tmp_path / "study", settings.ae_title, calling_ae="PACS1")
        assert res.returncode == 0, res.stdout + res.stderr
        _, sessions = open_store(settings)
        jobs = wait_until(lambda: _jobs(sessions, "done"), timeout=60)
    finally:
        assert node.stop() == 0, (tmp_path / "serve.log").read_text()[-3000:]
    [job] = jobs
    assert job.study_instance_uid == study.study_instance_uid and job.trigger == "auto"
    assert job.series == {
        "t1c": study.by_label("t1c").series_instance_uid,
        "flair": study.by_label("flair").series_instance_uid,
    }
    assert json.loads(job.destinations_json) == [{"name": "return_to_sender", "ae_title": "PACS1", "host": "127.0.0.1", "port": 104, "url": None}]
    with sessions() as s:
        [m] = jobstore.job_measurements(s, job.job_id)
        decisions = s.query(jobstore.RoutingDecisionRow).all()
    assert (m.name, m.value) == ("instances", 12)
    assert [(d.matched, json.loads(d.applications_json)) for d in decisions] == [(True, ["count-test"])]
    assert "brain-mr-count" in decisions[0].explanation
    assert marker.read_text().split()[0] == job.job_id


def _jobs(sessions, state: str):  # type: ignore[no-untyped-def]
    with sessions() as s:
        rows = jobstore.list_jobs(s)
    return rows if rows and all(r.state == state for r in rows) else None


def test_a_study_no_rule_wants_is_recorded_as_unmatched(tmp_path: Path) -> None:
    env, _ = _env(tmp_path)
    env["RADNODE_ROUTING__RULES_FILE"] = str(tmp_path / "ct-only.yaml")
    (tmp_path / "ct-only.yaml").write_text("version: 1\nrules:\n  - name: ct\n    match: {modalities: [CT]}\n    applications: [count-test]\n")
    settings = settings_from_env(env)
    node = Serve(env, tmp_path / "serve.log").start()
    try:
        generate_mr_study(tmp_path / "study", seed=1, rows=32, columns=32, slices=3)
        assert dcmtk.storescu("127.0.0.1", settings.port, tmp_path / "study", settings.ae_title).returncode == 0
        _, sessions = open_store(settings)

        def decided():  # type: ignore[no-untyped-def]
            with sessions() as s:
                return s.query(jobstore.RoutingDecisionRow).all()

        [decision] = wait_until(decided, timeout=30)
    finally:
        node.stop()
    assert decision.matched is False and json.loads(decision.applications_json) == []
    with sessions() as s:
        assert jobstore.list_jobs(s) == []


def test_serve_killed_mid_job_finishes_it_once_after_restart(tmp_path: Path) -> None:
    env, marker = _env(tmp_path, sleep=3)
    settings = settings_from_env(env)
    _, sessions = open_store(settings)
    study = spool_study(settings, tmp_path / "s", 7)
    node = Serve(env, tmp_path / "serve.log").start()
    job_id = add_job(sessions, study, "count-test", {"marker": str(marker), "sleep": 3})
    wait_state(sessions, job_id, {"inferring"}, timeout=60)
    node.kill()
    assert not marker.exists()
    node = Serve(env, tmp_path / "serve2.log").start()
    try:
        row = wait_state(sessions, job_id, {"done"}, timeout=60)
    finally:
        assert node.stop() == 0
    assert row.attempts == 2
    assert marker.read_text().split()[0] == job_id and len(marker.read_text().splitlines()) == 1


def test_embedded_poison_job_fails_after_three_attempts(tmp_path: Path) -> None:
    env, _ = _env(tmp_path)
    settings = settings_from_env(env)
    _, sessions = open_store(settings)
    study = spool_study(settings, tmp_path / "s", 8)
    node = Serve(env, tmp_path / "serve.log").start()
    try:
        job_id = add_job(sessions, study, "poison-test")
        row = wait_state(sessions, job_id, {"failed"}, timeout=60)
        retried = add_job(sessions, study, "count-test")
        wait_state(sessions, retried, {"done"}, timeout=60)
    finally:
        node.stop()
    assert row.attempts == 3 and "poisoned analyzer" in (row.error or "")
    # An operator retry from the CLI queues it again (and it fails again, visibly).
    out = subprocess.run([sys.executable, "-m", "radnode.cli", "jobs", "retry", job_id[:12]], env=env, capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0 and "queued" in out.stdout, out.stderr
    shown = json.loads(subprocess.run([sys.executable, "-m", "radnode.cli", "jobs", "show", job_id], env=env, capture_output=True, text=True, cwd=REPO, check=True).stdout)
    assert shown["state"] == "queued" and shown["attempts"] == 0
    assert [e["action"] for e in shown["events"]][-1] == "state:queued"


def test_running_node_hot_reloads_routing_and_refuses_an_invalid_edit(tmp_path: Path) -> None:
    import time

    env, _ = _env(tmp_path)
    rules = tmp_path / "live.yaml"
    rules.write_text("version: 1\nrules:\n  - name: ct\n    match: {modalities: [CT]}\n    applications: [count-test]\n")
    env["RADNODE_ROUTING__RULES_FILE"] = str(rules)
    env["RADNODE_ROUTING__RELOAD_INTERVAL"] = "0.3"
    settings = settings_from_env(env)
    _, sessions = open_store(settings)
    log = tmp_path / "serve.log"
    node = Serve(env, log).start()
    try:
        # An invalid edit (unknown application) is refused; the CT-only rules stay.
        rules.write_text("version: 1\nrules:\n  - name: mr\n    match: {modalities: [MR]}\n    applications: [no-such-app]\n")
        wait_until(lambda: "no-such-app" in log.read_text(), timeout=20)
        generate_mr_study(tmp_path / "a", seed=2, rows=32, columns=32, slices=3)
        assert dcmtk.storescu("127.0.0.1", settings.port, tmp_path / "a", settings.ae_title).returncode == 0
        wait_until(lambda: _decisions(sessions), timeout=30)
        assert _decisions(sessions)[0].matched is False
        # A valid edit takes effect within seconds, without a restart.
        time.sleep(1.1)  # a new mtime second
        rules.write_text("version: 1\nrules:\n  - name: mr\n    match: {modalities: [MR]}\n    applications: [count-test]\n")
        wait_until(lambda: "rules_reloaded" in log.read_text(), timeout=20)
        generate_mr_study(tmp_path / "b", seed=3, rows=32, columns=32, slices=3)
        assert dcmtk.storescu("127.0.0.1", settings.port, tmp_path / "b", settings.ae_title).returncode == 0
        wait_until(lambda: _jobs(sessions, "done"), timeout=60)
    finally:
        node.stop()
    text = log.read_text()
    assert f"{rules}:5:" in text  # the refused edit's FILE:LINE: in the log
    decisions = _decisions(sessions)
    assert [d.matched for d in decisions] == [False, True]


def _decisions(sessions):  # type: ignore[no-untyped-def]
    with sessions() as s:
        return s.query(jobstore.RoutingDecisionRow).order_by(jobstore.RoutingDecisionRow.id).all()
