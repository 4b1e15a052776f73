"""End to end: a study sent to the node, analysed, and its results delivered
by e-mail (aiosmtpd, STARTTLS), HL7 ORU^R01 (MLLP) and FHIR (validating
endpoint) — each delivered once, a refusing endpoint failing only its own
destination and retried, a retried job sending nothing twice, and critical
findings paging the ``notify`` destination."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

import pytest

from radnode.composition import Node
from radnode.settings import Settings
from radnode.store import jobs as jobstore
from radnode.synth.mr_study import generate_mr_study
from tests.conftest import wait_until
from tests.support import dcmtk
from tests.support.delivery_servers import FhirServer, MllpServer, SmtpServer, WebhookServer
from tests.support.ports import free_port

pytestmark = pytest.mark.slow


@pytest.fixture
def smtp(tmp_path: Path) -> Iterator[SmtpServer]:
    server = SmtpServer(tmp_path).start()
    yield server
    server.stop()


@pytest.fixture
def hook() -> Iterator[WebhookServer]:
    server = WebhookServer().start()
    yield server
    server.stop()


@pytest.fixture
def fhir() -> Iterator[FhirServer]:
    server = FhirServer(token="t0ken").start()
    yield server
    server.stop()


def _rules(tmp_path: Path, app: str, hl7_url: str, fhir_url: str, hook_url: str) -> Path:
    path = tmp_path / "routing.yaml"
    path.write_text(
        "version: 1\n"
        "destinations:\n"
        "  clinician: {email: [clinician@example.org]}\n"
        "  referring: {email: referring}\n"
        f"  emr: {{hl7: '{hl7_url}'}}\n"
        f"  ehr: {{fhir: '{fhir_url}'}}\n"
        "  pager: {email: pager@example.org}\n"
        f"  chat: {{webhook: '{hook_url}'}}\n"
        "rules:\n"
        "  - name: mr\n"
        "    match: {modalities: [MR]}\n"
        f"    applications: [{app}]\n"
        "    destinations: [clinician, emr, ehr]\n"
        "    notify: [pager, chat]\n"
    )
    return path


def _node(tmp_path: Path, rules: Path, smtp: SmtpServer, delivery: dict[str, Any] | None = None, **extra: Any) -> Node:
    settings = Settings(
        data_dir=tmp_path / "data",
        port=free_port(),
        quiet_seconds=1.0,
        listener={"assembly_interval": 0.2},
        routing={"rules_file": rules},
        analyzers={"plugins": ["tests.support.analyzers:ThresholdAnalyzer", "tests.support.analyzers:CriticalThresholdAnalyzer"]},
        queue={"retry_delays": [0.5], "max_attempts": 2, "outbox_interval": 0.3},
        results={"send_retry_delays": [0.2], "send_attempts": 2, "secondary_capture_pages": False},
        delivery={
            "smtp": smtp.settings(),
            "email_phi": True,
            "hl7": {"receiving_application": "EPIC", "ack_timeout": 1.0},
            "fhir": {"auth": "bearer", "token": "t0ken"},
            "job_url_base": "https://radnode.example.org",
            **(delivery or {}),
        },
        **extra,
    )
    node = Node(settings)
    node.start()
    return node


def _send_study(tmp_path: Path, node: Node, seed: int) -> None:
    generate_mr_study(tmp_path / "study", seed=seed, series=("t1c", "flair"), rows=32, columns=32, slices=6)
    result = dcmtk.storescu("127.0.0.1", node.settings.port, tmp_path / "study", node.settings.ae_title)
    assert result.returncode == 0, result.stderr


def _job(node: Node, states: set[str], timeout: float = 120) -> jobstore.JobRow:
    def done() -> jobstore.JobRow | None:
        with node.sessions() as s:
            jobs = jobstore.list_jobs(s)
        return jobs[0] if jobs and jobs[0].state in states else None

    return wait_until(done, timeout=timeout)  # type: ignore[no-any-return]


def _retry(node: Node, job_id: str) -> None:
    with node.sessions.begin() as s:
        jobstore.requeue(s, job_id, actor="test")


def test_one_study_one_mail_one_oru_one_bundle_and_nothing_twice(tmp_path: Path, smtp: SmtpServer, fhir: FhirServer, hook: WebhookServer) -> None:
    dcmtk.require_dcmtk("storescu")
    mllp = MllpServer("AA").start()
    node = _node(tmp_path, _rules(tmp_path, "threshold-test", mllp.url, fhir.url, hook.url), smtp)
    try:
        _send_study(tmp_path, node, seed=11)
        job = _job(node, {"done", "failed"})
        assert job.state == "done", job.error
        with node.sessions() as s:
            measurements = {m.name: m.value for m in jobstore.job_measurements(s, job.job_id)}
        assert set(measurements) == {"bright", "brightest"}

        # One e-mail, with the findings table and the PDF.
        [(rcpts, mail)] = smtp.messages
        assert rcpts == ["clinician@example.org"]
        parts = {p.get_content_type(): p for p in mail.walk()}
        assert parts["application/pdf"].get_payload(decode=True).startswith(b"%PDF")
        assert f"https://radnode.example.org/jobs/{job.job_id}" in parts["text/plain"].get_content()

        # One ORU^R01 whose NM OBX values are the job's measurements.
        [oru] = mllp.messages
        assert str(oru.segment("MSH")[9]) == "ORU^R01^ORU_R01"
        obx = {str(s[3][0][0]): (float(str(s[5])), str(s[6][0][0])) for s in oru.segments("OBX") if str(s[2]) == "NM"}
        assert obx == {name: (value, "mL") for name, value in measurements.items()}
        assert [str(s[2]) for s in oru.segments("OBX")].count("ED") == 1

        # One FHIR Bundle, accepted by the validating endpoint.
        assert fhir.rejected == []
        [bundle] = fhir.bundles
        values = {e["resource"]["code"]["coding"][-1]["code"]: e["resource"]["valueQuantity"]["value"] for e in bundle["entry"] if "valueQuantity" in e["resource"]}
        assert values == measurements

        sends = json.loads(job.sends_json)
        for name in ("clinician", "emr", "ehr"):
            assert sends[name]["delivered"] is True and sends[name]["confirmed"] is True, sends[name]
        assert "AA" in sends["emr"]["acknowledgement"] and "HTTP 200" in sends["ehr"]["acknowledgement"]
        assert sends["pager"]["skipped"] == "no critical finding" and sends["chat"]["skipped"] == "no critical finding"
        assert hook.posts == []

        # An operator retry runs the job again and sends nothing twice.
        _retry(node, job.job_id)
        again = _job(node, {"done"})
        assert again.finished_at and again.finished_at > (job.finished_at or 0)
        assert len(smtp.messages) == 1 and len(mllp.messages) == 1 and len(fhir.bundles) == 1
    finally:
        node.stop()
        mllp.stop()


def test_refusing_endpoint_fails_only_its_destination_and_is_retried(
    tmp_path: Path, smtp: SmtpServer, fhir: FhirServer, hook: WebhookServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    dcmtk.require_dcmtk("storescu")
    mllp = MllpServer("AE", reason="unknown patient").start()
    node = _node(tmp_path, _rules(tmp_path, "critical-test", mllp.url, fhir.url, hook.url), smtp)
    try:
        _send_study(tmp_path, node, seed=12)
        job = _job(node, {"done", "failed"})
        assert job.state == "failed"
        assert "emr" in (job.error or "") and "AE" in (job.error or "") and "unknown patient" in (job.error or "")
        assert "clinician" not in (job.error or "") and "ehr" not in (job.error or "")
        # Retried: two job attempts, each with two tries of the HL7 destination ...
        assert job.attempts == 2 and len(mllp.messages) == 4
        # ... while the other destinations got their results once.
        sends = json.loads(job.sends_json)
        assert sends["emr"]["delivered"] is False and "unknown patient" in sends["emr"]["error"]
        assert sends["clinician"]["delivered"] and sends["ehr"]["delivered"]
        # The critical finding paged the notify destination, acknowledged by the SMTP server.
        assert sends["pager"]["notify"] is True and sends["pager"]["delivered"] and "accepted" in sends["pager"]["acknowledgement"]
        assert sorted(r[0] for r, _ in smtp.messages) == ["clinician@example.org", "pager@example.org"]
        assert "CRITICAL" in [m for r, m in smtp.messages if r == ["pager@example.org"]][0]["Subject"]
        assert len(fhir.bundles) == 1
        [(_, page)] = hook.posts
        assert page["critical"] is True and page["critical_findings"][0]["name"] == "haemorrhage"
        assert sends["chat"]["notify"] is True and sends["chat"]["acknowledgement"] == "HTTP 200"

        # The EMR comes back: a retry delivers the ORU and sends nothing else again.
        mllp.mode = "AA"
        _retry(node, job.job_id)
        done = _job(node, {"done"})
        sends = json.loads(done.sends_json)
        assert sends["emr"]["delivered"] is True
        assert len(mllp.messages) == 5 and len(smtp.messages) == 2 and len(fhir.bundles) == 1 and len(hook.posts) == 1
        [oru_finding] = [s for s in mllp.messages[-1].segments("OBX") if str(s[2]) == "ST"]
        assert str(oru_finding[8]) == "AA"
    finally:
        node.stop()
        mllp.stop()
    _outcomes_are_visible(node.settings, done.job_id, monkeypatch)


def _outcomes_are_visible(settings: Settings, job_id: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Per destination on the job page, in `radnode jobs show` and in metrics."""
    import re

    from click.testing import CliRunner
    from fastapi.testclient import TestClient
    from prometheus_client import generate_latest

    from radnode.cli import main
    from radnode.metrics import make_registry
    from radnode.store.db import open_store
    from radnode.web.app import create_app
    from radnode.web.auth import add_user

    monkeypatch.setenv("RADNODE_DATA_DIR", str(settings.data_dir))
    shown = json.loads(CliRunner().invoke(main, ["jobs", "show", job_id]).output)
    rows = {d["name"]: d for d in shown["deliveries"]}
    assert rows["emr"]["state"] == "delivered" and rows["emr"]["kind"] == "hl7" and "ACK AA" in rows["emr"]["acknowledged"]
    assert rows["pager"]["notify"] is True and rows["pager"]["state"] == "delivered" and rows["pager"]["at"]
    assert rows["ehr"]["kind"] == "fhir" and rows["clinician"]["kind"] == "email"

    engine, sessions = open_store(settings)
    with sessions.begin() as s:
        add_user(s, "vera", "correct horse battery", "viewer", actor="test")
    metrics = generate_latest(make_registry(sessions)).decode()
    assert 'radnode_deliveries{kind="hl7",notify="false",state="delivered"} 1.0' in metrics
    assert 'radnode_deliveries{kind="email",notify="true",state="delivered"} 1.0' in metrics
    engine.dispose()

    web = settings.model_copy(update={"web": settings.web.model_copy(update={"secure_cookies": False})})
    with TestClient(create_app(web)) as client:
        token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/login").text).group(1)  # type: ignore[union-attr]
        client.post("/login", data={"username": "vera", "password": "correct horse battery", "csrf_token": token, "next": "/jobs"})
        page = client.get(f"/jobs/{job_id}").text
        api = client.get(f"/api/jobs/{job_id}").json()
    assert {d["name"]: d["state"] for d in api["deliveries"]} == {"clinician": "delivered", "emr": "delivered", "ehr": "delivered", "pager": "delivered", "chat": "delivered"}
    section = page[page.index('id="deliveries"'):]
    section = section[: section.index("</section>")]
    assert "pager" in section and "notify: critical only" in section and "accepted by SMTP server" in section
    assert "mllp://127.0.0.1" in section and "HL7 ACK AA" in section and "HTTP 200" in section


def test_study_from_orthanc_goes_back_to_pacs_and_beyond(orthanc_factory: Any, tmp_path: Path, smtp: SmtpServer, fhir: FhirServer) -> None:
    """Orthanc sends the study; results return to it by C-STORE (confirmed by
    C-FIND) and reach e-mail, HL7 and FHIR in the same dispatch, with the
    Referring Physician resolved through the directory file."""
    pacs = orthanc_factory(aet="HOSPITALPACS")
    mllp = MllpServer("AA").start()
    rules = tmp_path / "routing.yaml"
    rules.write_text(
        "version: 1\n"
        "destinations:\n"
        "  referring: {email: referring}\n"
        f"  emr: {{hl7: '{mllp.url}'}}\n"
        f"  ehr: {{fhir: '{fhir.url}'}}\n"
        "rules:\n"
        "  - name: mr\n"
        "    match: {modalities: [MR]}\n"
        "    applications: [threshold-test]\n"
        "    destinations: [return_to_sender, referring, emr, ehr]\n"
    )
    study = generate_mr_study(tmp_path / "study", seed=13, series=("t1c", "flair"), rows=32, columns=32, slices=6)
    from pydicom import dcmread

    referring = str(dcmread(next((tmp_path / "study").rglob("*.dcm")), stop_before_pixels=True).ReferringPhysicianName)
    assert referring
    directory = tmp_path / "directory.yaml"
    directory.write_text(json.dumps({referring.lower(): "referring.doctor@example.org"}))  # names match whatever the case
    node = _node(
        tmp_path, rules, smtp, delivery={"directory_file": str(directory)},
        peers=[{"name": "pacs", "ae_title": "HOSPITALPACS", "host": "127.0.0.1", "port": pacs.dicom_port}],
    )
    try:
        pacs.add_modality("radnode", node.settings.ae_title, "127.0.0.1", node.settings.port)
        pacs.upload_dir(tmp_path / "study")
        [orthanc_study] = pacs.studies()
        assert pacs.store_to_modality("radnode", [orthanc_study]).get("FailedInstancesCount", 0) == 0
        job = _job(node, {"done", "failed"})
    finally:
        node.stop()
        mllp.stop()
    assert job.state == "done", job.error
    sends = json.loads(job.sends_json)
    assert sends["return_to_sender"]["confirmed"] is True and sends["return_to_sender"]["kind"] == "dicom"
    assert pacs.instance_count() == study.instance_count + len(job.result_uids)
    [(rcpts, _)] = smtp.messages
    assert rcpts == ["referring.doctor@example.org"]
    assert len(mllp.messages) == 1 and len(fhir.bundles) == 1 and fhir.rejected == []
