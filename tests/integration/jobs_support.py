"""Helpers for the job pipeline tests: spooled studies, jobs, worker processes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

from pydicom import dcmread

from radnode.store import jobs as jobstore
from radnode.model.jobs import JobState
from radnode.settings import Settings
from radnode.synth.mr_study import GeneratedStudy, generate_mr_study
from tests.support.env import python_path

REPO = Path(__file__).resolve().parents[2]
PLUGINS = json.dumps(["tests.support.analyzers:CountingAnalyzer", "tests.support.analyzers:PoisonAnalyzer"])
AMQP = os.environ.get("RADNODE_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")


def node_env(data_dir: Path, *, broker: bool, namespace: str | None = None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RADNODE_")}
    env.update(
        RADNODE_DATA_DIR=str(data_dir),
        RADNODE_ANALYZERS__PLUGINS=PLUGINS,
        RADNODE_QUEUE__RETRY_DELAYS="[0.3, 0.3, 0.3]",
        RADNODE_QUEUE__OUTBOX_INTERVAL="0.3",
        RADNODE_LOGGING__LEVEL="info",
        RADNODE_WEB__IN_SERVE="false",
        PYTHONPATH=python_path(),
    )
    if broker:
        env["RADNODE_QUEUE__BROKER_URL"] = AMQP
        env["RADNODE_QUEUE__NAMESPACE"] = namespace or f"t{uuid.uuid4().hex[:10]}"
    env.update(extra)
    return env


def pacs_node_env(tmp_path: Path, pacs_port: int, **extra: str) -> dict[str, str]:
    """Environment of a radnode node whose PACS peer ("hospital", AE HOSPITALPACS) listens on *pacs_port*.

    Short quiet period and polling intervals so end-to-end tests finish quickly; *extra* overrides or adds.
    """
    from tests.support.ports import free_port

    env = {k: v for k, v in os.environ.items() if not k.startswith("RADNODE_")}
    env.update(
        RADNODE_DATA_DIR=str(tmp_path / "data"),
        RADNODE_PORT=str(free_port()),
        RADNODE_QUIET_SECONDS="2",
        RADNODE_LISTENER__ASSEMBLY_INTERVAL="0.3",
        RADNODE_QUEUE__OUTBOX_INTERVAL="0.5",
        RADNODE_PEERS=json.dumps([{"name": "hospital", "ae_title": "HOSPITALPACS", "host": "127.0.0.1", "port": pacs_port}]),
        RADNODE_ANALYZERS__PROVIDERS='["CPUExecutionProvider"]',
        RADNODE_WEB_PORT=str(free_port()),  # the README's variable: `radnode serve` honours it
        RADNODE_WEB__HOST="127.0.0.1",
        PYTHONPATH=python_path(),
    )
    env.update(extra)
    return env


def start_radnode(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """``python -m radnode.cli ARGS`` as a real process, its output appended to *log*."""
    fh = open(log, "ab")
    return subprocess.Popen([sys.executable, "-m", "radnode.cli", *args], env=env, stdout=fh, stderr=fh, cwd=REPO)


def settings_from_env(env: dict[str, str]) -> Settings:
    """The same settings the subprocesses read (the test's own view)."""
    saved = {k: v for k, v in os.environ.items() if k.startswith("RADNODE_")}
    try:
        for k in saved:
            del os.environ[k]
        os.environ.update({k: v for k, v in env.items() if k.startswith("RADNODE_")})
        return Settings()
    finally:
        for k in [k for k in os.environ if k.startswith("RADNODE_")]:
            del os.environ[k]
        os.environ.update(saved)


def spool_study(settings: Settings, out: Path, seed: int, series=("t1", "t2", "flair", "t1c")) -> GeneratedStudy:  # type: ignore[no-untyped-def]
    """Generate a study and place it in the spool as the listener would."""
    study = generate_mr_study(out, seed=seed, series=series, rows=32, columns=32, slices=4)
    for gen in study.series:
        for path in gen.files:
            ds = dcmread(path, stop_before_pixels=True)
            dest = settings.spool_dir / study.study_instance_uid / gen.series_instance_uid / f"{ds.SOPInstanceUID}.dcm"
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, dest)
    return study


def add_job(sessions, study: GeneratedStudy, app: str, options: dict | None = None) -> str:  # type: ignore[no-untyped-def,type-arg]
    series = {"t1c": study.by_label("t1c").series_instance_uid}
    if app == "count-test":
        series["flair"] = study.by_label("flair").series_instance_uid
    with sessions.begin() as s:
        row, _ = jobstore.create_job(s, jobstore.JobRequest(study.study_instance_uid, app, "1.0", series, options=options or {}))
        return row.job_id


class Worker:
    """``radnode worker`` as a real process."""

    def __init__(self, env: dict[str, str], apps: str = "count-test,poison-test", log: Path | None = None) -> None:
        self.log = log or Path(env["RADNODE_DATA_DIR"]).parent / f"worker-{uuid.uuid4().hex[:6]}.log"
        self._fh = open(self.log, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "radnode.cli", "worker", "--apps", apps], env=env, stdout=self._fh, stderr=self._fh, cwd=REPO)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        finally:
            self._fh.close()

    def text(self) -> str:
        return self.log.read_text(errors="replace")


def job_state(sessions, job_id: str) -> jobstore.JobRow:  # type: ignore[no-untyped-def]
    with sessions() as s:
        return jobstore.get_job(s, job_id)


def wait_state(sessions, job_id: str, states: set[str], timeout: float = 60) -> jobstore.JobRow:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        row = job_state(sessions, job_id)
        if row.state in states:
            return row
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} is {row.state} (error: {row.error}), wanted {states}")
        time.sleep(0.1)


def wait_first_job_finished(sessions, logs: list[Path], timeout: float,  # type: ignore[no-untyped-def]
                            study_uid: str | None = None) -> jobstore.JobRow:
    """The node's first job (of *study_uid*, if given) once it is terminal; on timeout the processes' logs are the failure message."""
    deadline = time.monotonic() + timeout
    while True:
        with sessions() as s:
            jobs = [j for j in jobstore.list_jobs(s) if study_uid is None or j.study_instance_uid == study_uid]
        if jobs and JobState(jobs[0].state).terminal:
            return jobs[0]
        if time.monotonic() > deadline:
            raise AssertionError("\n".join(p.read_text(errors="replace")[-3000:] for p in logs))
        time.sleep(0.5)


TERMINAL = {s.value for s in (JobState.DONE, JobState.FAILED, JobState.NEEDS_INPUT, JobState.CANCELLED)}


def result_files(pacs, orthanc_study: str, out: Path) -> dict[str, Path]:  # type: ignore[no-untyped-def]
    """The first instance of each result series (SEG, SR, DOC, OT by modality) of *orthanc_study*, downloaded to *out*."""
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    for sid in pacs.get(f"/studies/{orthanc_study}")["Series"]:
        series = pacs.get(f"/series/{sid}")
        modality = series["MainDicomTags"].get("Modality", "")
        if modality in ("SEG", "SR", "DOC", "OT") and modality not in files:
            path = out / f"{modality}.dcm"
            path.write_bytes(pacs.instance_file(series["Instances"][0]))
            files[modality] = path
    return files
