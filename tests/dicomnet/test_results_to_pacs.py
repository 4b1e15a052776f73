"""Results go back to a real PACS (Orthanc): SEG, SR, Encapsulated PDF and
secondary captures arrive in the patient's study, are confirmed by C-FIND,
and a destination that refuses makes the job fail visibly, never silently."""

from __future__ import annotations

import json
from pathlib import Path

from radnode.store import jobs as jobstore
from radnode.composition import Node
from radnode.settings import Settings
from radnode.sr_writer.validate import dciodvfy
from radnode.synth.mr_study import generate_mr_study
from tests.conftest import wait_until
from tests.support.ports import free_port
from tests.support.require import unavailable

RULES = "version: 1\nrules:\n  - name: mr\n    match: {modalities: [MR]}\n    applications: [threshold-test]\n"


def _node(tmp_path: Path, peers: list[dict], attempts: int = 2, rules_text: str = RULES, **extra) -> Node:  # type: ignore[type-arg,no-untyped-def]
    rules = tmp_path / "routing.yaml"
    rules.write_text(rules_text)
    settings = Settings(
        data_dir=tmp_path / "data",
        port=free_port(),
        quiet_seconds=1.0,
        peers=peers,
        listener={"assembly_interval": 0.2},
        routing={"rules_file": rules},
        analyzers={"plugins": ["tests.support.analyzers:ThresholdAnalyzer"]},
        queue={"retry_delays": [1.0], "max_attempts": attempts, "outbox_interval": 0.3},
        results={"send_retry_delays": [0.2], "send_attempts": 2},
        **extra,
    )
    node = Node(settings)
    node.start()
    return node


def _wait_job(node: Node, states: set[str], timeout: float = 90) -> jobstore.JobRow:
    def done():  # type: ignore[no-untyped-def]
        with node.sessions() as s:
            jobs = jobstore.list_jobs(s)
        return jobs[0] if jobs and jobs[0].state in states else None

    return wait_until(done, timeout=timeout)


def test_orthanc_sends_a_study_and_receives_valid_results(orthanc_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    pacs = orthanc_factory(aet="HOSPITALPACS")
    node = _node(tmp_path, [{"name": "pacs", "ae_title": "HOSPITALPACS", "host": "127.0.0.1", "port": pacs.dicom_port}])
    try:
        pacs.add_modality("radnode", node.settings.ae_title, "127.0.0.1", node.settings.port)
        study = generate_mr_study(tmp_path / "study", seed=5, series=("t1", "t2", "flair", "t1c"), rows=48, columns=48, slices=8)
        pacs.upload_dir(tmp_path / "study")
        [orthanc_study] = pacs.studies()
        assert pacs.store_to_modality("radnode", [orthanc_study]).get("FailedInstancesCount", 0) == 0
        job = _wait_job(node, {"done", "failed"})
    finally:
        node.stop()
    assert job.state == "done", job.error
    sends = json.loads(job.sends_json)
    assert sends["return_to_sender"]["confirmed"] is True and sends["return_to_sender"]["failed"] == {}

    # The PACS now holds the results as new series of the same study.
    series = [pacs.get(f"/series/{sid}") for sid in pacs.get(f"/studies/{orthanc_study}")["Series"]]
    modalities = sorted(s["MainDicomTags"].get("Modality", "") for s in series)
    assert modalities.count("MR") == 4
    for wanted in ("SEG", "SR", "DOC", "OT"):
        assert wanted in modalities, modalities
    descriptions = [s["MainDicomTags"].get("SeriesDescription", "") for s in series if s["MainDicomTags"].get("Modality") != "MR"]
    assert all("DEMO - NOT FOR CLINICAL USE" in d for d in descriptions), descriptions
    assert all(s["MainDicomTags"].get("SeriesInstanceUID") for s in series)
    assert len(job.result_uids) == pacs.instance_count() - study.instance_count

    # Every object radnode wrote passes the reference validator.
    results = node.settings.work_dir / job.job_id / "results"
    for path in sorted(results.glob("*.dcm")):
        assert dciodvfy(path) == [], path.name


def test_a_refusing_destination_fails_the_job_with_the_reason(tmp_path: Path) -> None:
    dead_port = free_port()  # nothing listens here
    node = _node(tmp_path, [{"name": "pacs", "ae_title": "GONEPACS", "host": "127.0.0.1", "port": dead_port}])
    try:
        generate_mr_study(tmp_path / "study", seed=6, series=("t1c",), rows=32, columns=32, slices=6)
        from tests.support import dcmtk

        res = dcmtk.storescu("127.0.0.1", node.settings.port, tmp_path / "study", node.settings.ae_title, calling_ae="GONEPACS")
        assert res.returncode == 0, res.stdout + res.stderr
        job = _wait_job(node, {"failed"}, timeout=120)
    finally:
        node.stop()
    assert job.attempts == 2
    assert "could not deliver results to return_to_sender (GONEPACS@127.0.0.1" in (job.error or "")
    sends = json.loads(job.sends_json)
    assert sends["return_to_sender"]["sent"] == 0 and ": connection refused" in sends["return_to_sender"]["error"]


def test_a_destination_that_comes_back_gets_the_results_once(orthanc_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from tests.support import dcmtk

    pacs_port = free_port()  # Orthanc is down at first
    node = _node(tmp_path, [{"name": "pacs", "ae_title": "HOSPITALPACS", "host": "127.0.0.1", "port": pacs_port}], attempts=10)
    try:
        generate_mr_study(tmp_path / "study", seed=7, series=("t1c",), rows=32, columns=32, slices=6)
        assert dcmtk.storescu("127.0.0.1", node.settings.port, tmp_path / "study", node.settings.ae_title, calling_ae="HOSPITALPACS").returncode == 0

        def failed_once():  # type: ignore[no-untyped-def]
            with node.sessions() as s:
                jobs = jobstore.list_jobs(s)
            return jobs[0] if jobs and jobs[0].error and "could not deliver" in jobs[0].error else None

        first = wait_until(failed_once, timeout=60, interval=0.1)
        assert first.state in ("queued", "preprocessing", "inferring", "writing", "sending")  # retrying, not dropped
        pacs = orthanc_factory(aet="HOSPITALPACS", dicom_port=pacs_port)  # the PACS comes back
        job = _wait_job(node, {"done", "failed"}, timeout=120)
    finally:
        node.stop()
    assert job.state == "done", job.error
    assert job.attempts >= 2
    # Every result instance is there exactly once (deterministic UIDs; a re-send replaces).
    assert pacs.instance_count() == len(job.result_uids)
    assert len(set(job.result_uids)) == len(job.result_uids)
    with node.sessions() as s:
        events = [e.detail for e in jobstore.job_events(s, job.job_id) if e.action == "sent"]
    assert events and "confirmed=True" in events[-1]


def test_results_to_a_dicomweb_destination_by_stow_rs(orthanc_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A routing destination with a `url` receives the results by STOW-RS (Orthanc's DICOMweb plugin)."""
    plugin = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
    if not plugin.exists():
        unavailable("orthanc-dicomweb is not installed (scripts/install.sh installs it)")
    archive = orthanc_factory(aet="ARCHIVE", extra_config={"Plugins": [str(plugin)], "DicomWeb": {"Enable": True, "Root": "/dicom-web/"}})
    url = f"http://127.0.0.1:{archive.http_port}/dicom-web"
    rules_text = (
        "version: 1\n"
        "destinations:\n"
        f"  archive: {{url: '{url}'}}\n"
        "rules:\n"
        "  - name: mr\n"
        "    match: {modalities: [MR]}\n"
        "    applications: [threshold-test]\n"
        "    destinations: [archive]\n"
    )
    node = _node(tmp_path, [], rules_text=rules_text)
    try:
        generate_mr_study(tmp_path / "study", seed=9, series=("t1c",), rows=32, columns=32, slices=6)
        from tests.support import dcmtk

        assert dcmtk.storescu("127.0.0.1", node.settings.port, tmp_path / "study", node.settings.ae_title).returncode == 0
        job = _wait_job(node, {"done", "failed"})
    finally:
        node.stop()
    assert job.state == "done", job.error
    assert json.loads(job.destinations_json) == [{"name": "archive", "ae_title": "", "host": "", "port": None, "url": url}]
    sends = json.loads(job.sends_json)
    assert sends["archive"]["failed"] == {} and sends["archive"]["confirmed"] is True
    assert archive.instance_count() == len(job.result_uids)
