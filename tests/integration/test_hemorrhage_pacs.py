"""Orthanc sends generated head CTs to radnode (`radnode listen` + `radnode worker`
over RabbitMQ, default demo model): the hemorrhage job runs, its SEG, SR,
Encapsulated PDF and secondary captures land in the same study in Orthanc and
pass dciodvfy, a study with a bleed is flagged critical and reaches the rule's
``notify`` webhook, and a study without one does neither (issue 16)."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pydicom
import pytest

from radnode.queue.base import queue_name
from radnode.sr_writer.validate import dciodvfy
from radnode.store import jobs as jobstore
from radnode.store.db import open_store
from radnode.synth.hemorrhage import generate_hemorrhage_study
from tests.conftest import wait_for_port
from tests.integration.jobs_support import result_files, AMQP, pacs_node_env, settings_from_env, start_radnode, wait_first_job_finished
from tests.support.delivery_servers import WebhookServer
from tests.support.rabbit import delete_topology, shared_broker_reachable
from tests.support.require import unavailable

#: A study with an intraparenchymal and a subdural bleed, and one without (seeds the demo model never saw).
BLEED_SEED, NORMAL_SEED = 910_001, 910_002


def _rules(tmp_path: Path, hook_url: str) -> Path:
    path = tmp_path / "routing.yaml"
    path.write_text(
        "version: 1\n"
        "destinations:\n"
        f"  stroke_chat: {{webhook: '{hook_url}'}}\n"
        "rules:\n"
        "  - name: head-ct\n"
        "    match: {modalities: [CT], body_part: '(?i)head|brain'}\n"
        "    applications: [hemorrhage]\n"
        "    destinations: [return_to_sender]\n"
        "    notify: [stroke_chat]\n"
    )
    return path


@pytest.mark.slow
def test_head_ct_through_orthanc_and_rabbitmq_is_triaged(orthanc_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    if not shared_broker_reachable():
        unavailable("RabbitMQ is not reachable on 127.0.0.1:5672")
    pacs = orthanc_factory(aet="HOSPITALPACS")
    hook = WebhookServer().start()
    ns = f"t{uuid.uuid4().hex[:10]}"
    env = pacs_node_env(tmp_path, pacs.dicom_port, RADNODE_QUEUE__BROKER_URL=AMQP, RADNODE_QUEUE__NAMESPACE=ns,
                        RADNODE_ROUTING__RULES_FILE=str(_rules(tmp_path, hook.url)))
    logs = [tmp_path / "listen.log", tmp_path / "worker.log"]
    listener = start_radnode(["listen"], env, logs[0])
    worker = start_radnode(["worker", "--apps", "hemorrhage"], env, logs[1])
    try:
        wait_for_port(int(env["RADNODE_PORT"]), proc=listener, log=logs[0], timeout=60)
        settings = settings_from_env(env)
        pacs.add_modality("radnode", settings.ae_title, "127.0.0.1", settings.port)
        bleed = generate_hemorrhage_study(tmp_path / "bleed", seed=BLEED_SEED,
                                          subtypes={"intraparenchymal", "subdural"})
        normal = generate_hemorrhage_study(tmp_path / "normal", seed=NORMAL_SEED, hemorrhage=False)
        _, sessions = open_store(settings)
        jobs = {}
        for name, study in (("bleed", bleed), ("normal", normal)):
            before = set(pacs.studies())
            pacs.upload_dir(study.out_dir / "dicom")
            [orthanc_study] = set(pacs.studies()) - before
            assert pacs.store_to_modality("radnode", [orthanc_study]).get("FailedInstancesCount", 0) == 0
            job = wait_first_job_finished(sessions, logs, 300, study_uid=study.study.study_instance_uid)
            assert job.state == "done", job.error
            assert job.application == "hemorrhage" and job.priority > 0  # urgent by declaration
            jobs[name] = (job, orthanc_study, study)

        # The bleed: flagged critical with the subtypes present, the webhook told, results in the PACS.
        job, orthanc_study, study = jobs["bleed"]
        assert job.critical, job.findings
        present = {f["name"] for f in job.findings if f["present"]}
        assert any("ntraparenchymal" in n for n in present), present
        files = result_files(pacs, orthanc_study, tmp_path / "bleed")
        assert set(files) == {"SEG", "SR", "DOC", "OT"}, files
        for path in files.values():
            assert dciodvfy(path) == [], path
        seg = pydicom.dcmread(files["SEG"])
        labels = {s.SegmentLabel for s in seg.SegmentSequence}
        assert any("ntraparenchymal" in x for x in labels), labels
        assert seg.StudyInstanceUID == study.study.study_instance_uid
        with sessions() as s:
            measured = {m.name: m.value for m in jobstore.job_measurements(s, job.job_id)}
        truth_ml = study.truth["volumes_ml"]["intraparenchymal"]
        assert measured["intraparenchymal_volume"] == pytest.approx(truth_ml, rel=0.5), (measured, truth_ml)
        deadline = time.monotonic() + 30
        while not hook.posts and time.monotonic() < deadline:
            time.sleep(0.2)
        assert len(hook.posts) == 1, hook.posts
        assert hook.posts[0][1]["critical"] is True

        # The normal head: not critical, no notification, its SR still in the PACS.
        job, orthanc_study, _ = jobs["normal"]
        assert not job.critical and not any(f["present"] for f in job.findings), job.findings
        files = result_files(pacs, orthanc_study, tmp_path / "normal")
        assert "SR" in files and "SEG" not in files, files
        assert dciodvfy(files["SR"]) == []
        assert len(hook.posts) == 1
    finally:
        hook.stop()
        for p in (listener, worker):
            p.terminate()
        assert listener.wait(60) == 0 and worker.wait(60) == 0
        delete_topology(AMQP, [queue_name("hemorrhage", ns), f"{ns}.dead"] + [f"{ns}.retry.{d}" for d in ("5s", "30s", "120s")],
                        [f"{ns}.jobs", f"{ns}.dlx", f"{ns}.retry"])
