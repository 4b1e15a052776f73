"""Orthanc sends a generated glioma study to radnode; SEG, SR, Encapsulated
PDF and secondary-capture series appear in the same study in Orthanc —
once with `radnode serve` and the embedded queue, once with separate
`radnode listen` and `radnode worker` processes over RabbitMQ."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from radnode.queue.base import queue_name
from radnode.store import jobs as jobstore
from radnode.store.db import open_store
from radnode.store.studies import StudyRow
from radnode.synth.glioma import generate_glioma_study
from tests.conftest import wait_for_port
from tests.integration.jobs_support import AMQP, pacs_node_env, settings_from_env, start_radnode, wait_first_job_finished
from tests.support.rabbit import delete_topology, shared_broker_reachable
from tests.support.require import unavailable


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
    env = pacs_node_env(tmp_path, pacs.dicom_port)
    log = tmp_path / "serve.log"
    proc = start_radnode(["serve"], env, log)
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
    env = pacs_node_env(tmp_path, pacs.dicom_port, RADNODE_QUEUE__BROKER_URL=AMQP, RADNODE_QUEUE__NAMESPACE=ns)
    logs = [tmp_path / "listen.log", tmp_path / "worker.log"]
    listener = start_radnode(["listen"], env, logs[0])
    worker = start_radnode(["worker", "--apps", "glioma"], env, logs[1])
    try:
        wait_for_port(int(env["RADNODE_PORT"]), proc=listener, log=logs[0], timeout=60)
        _send_and_check(tmp_path, pacs, env, logs)
    finally:
        for p in (listener, worker):
            p.terminate()
        assert listener.wait(60) == 0 and worker.wait(60) == 0
        delete_topology(AMQP, [queue_name("glioma", ns), f"{ns}.dead"] + [f"{ns}.retry.{d}" for d in ("5s", "30s", "120s")], [f"{ns}.jobs", f"{ns}.dlx", f"{ns}.retry"])
