"""Orthanc sends a generated glioma study to radnode; SEG, SR, Encapsulated
PDF and secondary-capture series appear in the same study in Orthanc —
once with `radnode serve` and the embedded queue, once with separate
`radnode listen` and `radnode worker` processes over RabbitMQ."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from radnode.queue.base import queue_name
from radnode.store import jobs as jobstore
from radnode.store.db import open_store
from radnode.store.studies import StudyRow
from radnode.synth.glioma import generate_glioma_study
from tests.conftest import wait_for_port
from tests.integration.jobs_support import AMQP, REPO, settings_from_env, wait_first_job_finished
from tests.support.ports import free_port
from tests.support.rabbit import delete_topology, shared_broker_reachable
from tests.support.require import unavailable
from tests.support.env import python_path


def _env(tmp_path: Path, pacs_port: int, **extra: str) -> dict[str, str]:
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


def _start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    fh = open(log, "ab")
    return subprocess.Popen([sys.executable, "-m", "radnode.cli", *args], env=env, stdout=fh, stderr=fh, cwd=REPO)


def _send_and_check(tmp_path: Path, pacs, env: dict[str, str], logs: list[Path]) -> float:  # type: ignore[no-untyped-def]
    settings = settings_from_env(env)
    pacs.add_modality("radnode", settings.ae_title, "127.0.0.1", settings.port)
    study = generate_glioma_study(tmp_path / "study", seed=900220)
    pacs.upload_dir(tmp_path / "study" / "dicom")
    [orthanc_study] = pacs.studies()
    assert pacs.store_to_modality("radnode", [orthanc_study]).get("FailedInstancesCount", 0) == 0
    _, sessions = open_store(settings)
    job = wait_first_job_finished(sessions, logs, timeout=400)
    assert job.state == "done", job.error
    assert job.application == "glioma" and job.trigger == "auto"
    series = [pacs.get(f"/series/{sid}")["MainDicomTags"] for sid in pacs.get(f"/studies/{orthanc_study}")["Series"]]
    modalities = sorted(s.get("Modality", "") for s in series)
    for wanted in ("SEG", "SR", "DOC", "OT"):
        assert wanted in modalities, modalities
    assert pacs.instance_count() == study.study.instance_count + len(job.result_uids)
    assert json.loads(job.sends_json)["return_to_sender"]["confirmed"] is True
    with sessions() as s:
        last_image = s.get(StudyRow, study.study.study_instance_uid).last_received_at
        measurements = {m.name: m.value for m in jobstore.job_measurements(s, job.job_id)}
    assert measurements["whole_tumor"] == pytest.approx(study.truth["volumes_ml"]["whole_tumor"], rel=0.35)
    latency = job.finished_at - last_image
    print(f"last image received → results stored and confirmed in Orthanc: {latency:.1f} s")
    return latency


@pytest.mark.slow
def test_radnode_serve_with_the_embedded_queue(orthanc_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    pacs = orthanc_factory(aet="HOSPITALPACS")
    env = _env(tmp_path, pacs.dicom_port)
    log = tmp_path / "serve.log"
    proc = _start(["serve"], env, log)
    try:
        wait_for_port(int(env["RADNODE_PORT"]), proc=proc, log=log, timeout=60)
        # serve also runs the web app.
        import urllib.request

        wait_for_port(int(env["RADNODE_WEB_PORT"]), proc=proc, log=log, timeout=30)
        with urllib.request.urlopen(f"http://127.0.0.1:{env['RADNODE_WEB_PORT']}/healthz", timeout=10) as resp:
            assert json.loads(resp.read())["status"] == "ok"
        _send_and_check(tmp_path, pacs, env, [log])
    finally:
        proc.terminate()
        assert proc.wait(60) == 0


@pytest.mark.slow
def test_separate_listener_and_worker_over_rabbitmq(orthanc_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    if not shared_broker_reachable():
        unavailable("RabbitMQ is not reachable on 127.0.0.1:5672")
    pacs = orthanc_factory(aet="HOSPITALPACS")
    ns = f"t{uuid.uuid4().hex[:10]}"
    env = _env(tmp_path, pacs.dicom_port, RADNODE_QUEUE__BROKER_URL=AMQP, RADNODE_QUEUE__NAMESPACE=ns)
    logs = [tmp_path / "listen.log", tmp_path / "worker.log"]
    listener = _start(["listen"], env, logs[0])
    worker = _start(["worker", "--apps", "glioma"], env, logs[1])
    try:
        wait_for_port(int(env["RADNODE_PORT"]), proc=listener, log=logs[0], timeout=60)
        _send_and_check(tmp_path, pacs, env, logs)
    finally:
        for p in (listener, worker):
            p.terminate()
        assert listener.wait(60) == 0 and worker.wait(60) == 0
        delete_topology(AMQP, [queue_name("glioma", ns), f"{ns}.dead"] + [f"{ns}.retry.{d}" for d in ("5s", "30s", "120s")], [f"{ns}.jobs", f"{ns}.dlx", f"{ns}.retry"])
