"""E-mail, HL7 v2 and FHIR destinations against real servers on loopback:
aiosmtpd with STARTTLS and AUTH, the hl7 package's MLLP server answering AA,
AE or nothing, and a FHIR endpoint that validates every resource."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any, Iterator

import pytest

from radnode.model.delivery import PackagedFinding, PackagedMeasurement, PatientIdentity, ResultPackage
from radnode.model.jobs import Destination
from radnode.peers.destinations import CallerIdentity, open_destination
from radnode.peers.dicom import FailureKind, PeerUnavailable
from radnode.peers.hl7 import build_oru
from radnode.settings import DeliverySettings, Hl7Settings
from tests.support.delivery_servers import FhirServer, MllpServer, SmtpServer
from tests.support.ports import free_port

PDF = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"


def package(critical: bool = False, **extra: Any) -> ResultPackage:
    values: dict[str, Any] = dict(
        job_id="0123456789abcdef0123456789abcdef",
        application="glioma",
        study_instance_uid="1.2.826.0.1.3680043.8.498.1",
        accession="ACC12345",
        patient=PatientIdentity(patient_id="PAT-7", issuer="HOSP", name="Doe^Jane", birth_date="19700101", sex="F"),
        referring_physician="House^Gregory",
        study_description="MR BRAIN W/O",
        study_date="20260102",
        study_time="101500",
        measurements=(
            PackagedMeasurement("whole_tumor", 12.345678, "mL", ("118565006", "SCT", "Volume")),
            PackagedMeasurement("largest_diameter", 41.5, "mm", ("103355008", "SCT", "Width")),
        ),
        findings=(PackagedFinding("haemorrhage", critical, 0.97, "left frontal", critical=critical),),
        pdf=PDF,
        job_url="https://radnode.example.org/jobs/0123456789abcdef0123456789abcdef",
    )
    values.update(extra)
    return ResultPackage(**values)


@pytest.fixture
def smtp(tmp_path: Path) -> Iterator[SmtpServer]:
    server = SmtpServer(tmp_path).start()
    yield server
    server.stop()


def caller(**delivery: Any) -> CallerIdentity:
    return CallerIdentity(delivery=DeliverySettings(**delivery))


# -- e-mail ---------------------------------------------------------------------


def test_email_with_phi_has_findings_table_and_pdf_over_starttls(smtp: SmtpServer) -> None:
    dest = open_destination(Destination(name="onc", email=("a@example.org", "b@example.org")), caller(smtp=smtp.settings(), email_phi=True))
    report = dest.send([], package(critical=True))
    assert report.ok and report.sent == ["a@example.org", "b@example.org"]
    [(rcpts, msg)] = smtp.messages
    assert rcpts == ["a@example.org", "b@example.org"]
    assert "CRITICAL" in msg["Subject"] and "ACC12345" in msg["Subject"]
    parts = {p.get_content_type(): p for p in msg.walk()}
    html = parts["text/html"].get_payload(decode=True).decode()
    assert "whole_tumor" in html and "12.35" in html and "Doe Jane" in html
    assert parts["application/pdf"].get_payload(decode=True) == PDF
    assert "accepted" in dest.acknowledgement  # type: ignore[attr-defined]


def test_email_without_phi_carries_only_the_link(smtp: SmtpServer) -> None:
    dest = open_destination(Destination(name="onc", email=("a@example.org",)), caller(smtp=smtp.settings(), email_phi=False))
    assert dest.send([], package()).ok
    [(_, msg)] = smtp.messages
    raw = msg.as_string()
    for phi in ("Doe", "PAT-7", "ACC12345", "19700101"):
        assert phi not in raw
    assert "application/pdf" not in {p.get_content_type() for p in msg.walk()}
    assert "https://radnode.example.org/jobs/0123456789abcdef0123456789abcdef" in raw


def test_email_to_referring_physician_through_the_directory(smtp: SmtpServer, tmp_path: Path) -> None:
    directory = tmp_path / "directory.yaml"
    directory.write_text('"HOUSE^GREGORY": house@example.org\n"Cuddy^Lisa": cuddy@example.org\n')
    dest = open_destination(Destination(name="ref", email=("referring",)), caller(smtp=smtp.settings(), directory_file=directory))
    assert dest.send([], package()).sent == ["house@example.org"]
    with pytest.raises(PeerUnavailable, match="not in the directory"):
        dest.send([], package(referring_physician="Nobody^Known"))


def test_refused_recipient_is_a_failed_item_and_not_resent(smtp: SmtpServer) -> None:
    smtp.handler.refuse.add("gone@example.org")
    dest = open_destination(Destination(name="onc", email=("a@example.org", "gone@example.org")), caller(smtp=smtp.settings()))
    report = dest.send([], package())
    assert report.sent == ["a@example.org"] and "550" in report.failed["gone@example.org"]
    smtp.handler.refuse.clear()
    again = dest.send([], package(), done=report.sent)
    assert again.sent == ["gone@example.org"]
    assert [r for r, _ in smtp.messages] == [["a@example.org"], ["gone@example.org"]]


def test_smtp_security_is_enforced_and_checked(smtp: SmtpServer) -> None:
    # Without the test CA the self-signed certificate is refused: TLS is verified.
    bad = open_destination(Destination(name="m", email=("a@example.org",)), caller(smtp=smtp.settings(ca_file=None)))
    with pytest.raises(PeerUnavailable, match="TLS"):
        bad.send([], package())
    wrong = open_destination(Destination(name="m", email=("a@example.org",)), caller(smtp=smtp.settings(password="nope")))
    assert not wrong.check().ok and "login" in wrong.check().diagnosis
    good = open_destination(Destination(name="m", email=("a@example.org",)), caller(smtp=smtp.settings()))
    result = good.check()
    assert result.ok and "STARTTLS" in result.diagnosis and "AUTH" in result.diagnosis
    closed = open_destination(Destination(name="m", email=("a@example.org",)), caller(smtp={**smtp.settings(), "port": free_port()}))
    assert closed.check().kind is FailureKind.REFUSED
    assert smtp.messages == []


# -- HL7 --------------------------------------------------------------------------


def test_oru_structure_and_values() -> None:
    msg = build_oru(package(critical=True), Hl7Settings(sending_application="RADNODE", receiving_application="EPIC"))
    assert str(msg.segment("MSH")[9]) == "ORU^R01^ORU_R01" and str(msg.segment("MSH")[12]) == "2.5.1"
    assert str(msg.segment("MSH")[5]) == "EPIC"
    assert str(msg.segment("PID")[3]) == "PAT-7^^^HOSP" and str(msg.segment("PID")[5]) == "Doe^Jane"
    assert str(msg.segment("OBR")[3]) == "ACC12345" and str(msg.segment("ORC")[3]) == "ACC12345"
    obx = msg.segments("OBX")
    nm = [s for s in obx if str(s[2]) == "NM"]
    assert [(str(s[3][0][0]), float(str(s[5])), str(s[6][0][0]), str(s[6][0][2])) for s in nm] == [
        ("whole_tumor", 12.345678, "mL", "UCUM"), ("largest_diameter", 41.5, "mm", "UCUM")]
    [finding] = [s for s in obx if str(s[2]) == "ST"]
    assert str(finding[8]) == "AA"
    [ed] = [s for s in obx if str(s[2]) == "ED"]
    assert base64.b64decode(str(ed[5][0][4])) == PDF


def test_text_with_delimiters_is_escaped() -> None:
    msg = build_oru(package(study_description="MR|BRAIN^W&O~X"), Hl7Settings())
    assert len(msg.segments("OBX")) == 4
    assert "\\F\\" in str(msg.segment("OBR")[4])


@pytest.mark.parametrize("mode", ["AA", "AE", "silent"])
def test_mllp_ack_decides(mode: str) -> None:
    server = MllpServer(mode=mode, reason="unknown patient PAT-7").start()
    try:
        dest = open_destination(Destination(name="emr", hl7=server.url), caller(hl7={"ack_timeout": 1.0}))
        if mode == "AA":
            report = dest.send([], package())
            assert report.sent == ["0123456789abcdef0123"]
            assert "AA" in dest.acknowledgement  # type: ignore[attr-defined]
        elif mode == "AE":
            with pytest.raises(PeerUnavailable, match="AE .*unknown patient PAT-7") as info:
                dest.send([], package())
            assert info.value.kind is FailureKind.STATUS
        else:
            with pytest.raises(PeerUnavailable, match="no ACK within 1 s") as info:
                dest.send([], package())
            assert info.value.kind is FailureKind.STOPPED_ANSWERING
        [received] = server.messages
        assert str(received.segment("MSH")[10]) == "0123456789abcdef0123"
        assert dest.check().ok
        # Already delivered: not sent again.
        if mode == "AA":
            assert dest.send([], package(), done=["0123456789abcdef0123"]).sent == []
            assert len(server.messages) == 1
    finally:
        server.stop()


def test_mllp_nothing_listening() -> None:
    dest = open_destination(Destination(name="emr", hl7=f"mllp://127.0.0.1:{free_port()}"), caller(hl7={"ack_timeout": 2.0}))
    with pytest.raises(PeerUnavailable, match="connection refused"):
        dest.send([], package())
    assert dest.check().kind is FailureKind.REFUSED


def test_mllp_over_tls(tmp_path: Path) -> None:
    """mllps://: the ORU goes over TLS, verified against the receiver's certificate."""
    import asyncio
    import ssl

    from tests.support.delivery_servers import self_signed_cert

    cert, key = self_signed_cert(tmp_path / "tls")
    server = MllpServer(mode="AA")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)

    def run() -> None:  # the same server, with TLS
        from hl7.mllp import start_hl7_server

        asyncio.set_event_loop(server._loop)

        async def serve() -> None:
            server._server = await start_hl7_server(server._client, host="127.0.0.1", port=server.port, encoding="utf-8", ssl=context)
            server._ready.set()

        server._loop.run_until_complete(serve())
        server._loop.run_forever()

    server._thread = __import__("threading").Thread(target=run, daemon=True)
    server.start()
    try:
        url = f"mllps://localhost:{server.port}"
        trusted = open_destination(Destination(name="emr", hl7=url), caller(hl7={"ack_timeout": 3.0, "ca_file": str(cert)}))
        assert trusted.send([], package()).ok
        untrusted = open_destination(Destination(name="emr", hl7=url), caller(hl7={"ack_timeout": 3.0}))
        with pytest.raises(PeerUnavailable, match="TLS"):
            untrusted.send([], package())
        assert len(server.messages) == 1
    finally:
        server.stop()


# -- FHIR -------------------------------------------------------------------------


def test_fhir_bundle_accepted_by_validating_server() -> None:
    server = FhirServer(token="tok").start()
    try:
        dest = open_destination(Destination(name="fhir", fhir=server.url), caller(fhir={"auth": "bearer", "token": "tok"}))
        assert dest.check().ok and "4.0.1" in dest.check().diagnosis
        assert dest.send([], package(critical=True)).sent == ["0123456789abcdef0123456789abcdef"]
        assert "DiagnosticReport" in dest.acknowledgement  # type: ignore[attr-defined]
        [bundle] = server.bundles
        assert server.rejected == []
        report = bundle["entry"][0]["resource"]
        assert report["resourceType"] == "DiagnosticReport" and report["status"] == "final"
        assert report["code"]["coding"][0] == {"system": "http://loinc.org", "code": "18748-4", "display": "Diagnostic imaging study"}
        assert report["subject"]["identifier"]["value"] == "PAT-7"
        assert report["imagingStudy"][0]["identifier"]["value"] == "urn:oid:1.2.826.0.1.3680043.8.498.1"
        assert base64.b64decode(report["presentedForm"][0]["data"]) == PDF
        assert "CRITICAL" in report["conclusion"]
        quantities = [e["resource"]["valueQuantity"] for e in bundle["entry"] if "valueQuantity" in e["resource"]]
        assert [(q["value"], q["code"], q["system"]) for q in quantities] == [(12.345678, "mL", "http://unitsofmeasure.org"), (41.5, "mm", "http://unitsofmeasure.org")]
        [finding] = [e["resource"] for e in bundle["entry"] if "valueBoolean" in e["resource"]]
        assert finding["interpretation"][0]["coding"][0]["code"] == "AA"
        assert len(report["result"]) == 3
    finally:
        server.stop()


def test_fhir_refusal_and_auth_read_back() -> None:
    server = FhirServer(refuse=True, token="tok").start()
    try:
        dest = open_destination(Destination(name="fhir", fhir=server.url), caller(fhir={"auth": "bearer", "token": "tok"}))
        with pytest.raises(PeerUnavailable, match="HTTP 422: error: subject is not a known patient"):
            dest.send([], package())
        unauthorised = open_destination(Destination(name="fhir", fhir=server.url), caller(fhir={"auth": "bearer", "token": "wrong"}))
        with pytest.raises(PeerUnavailable, match="HTTP 401"):
            unauthorised.send([], package())
        assert not unauthorised.check().ok
    finally:
        server.stop()


def test_fhir_server_rejects_invalid_resources() -> None:
    """The test server really validates: a hand-broken Bundle gets a 400 OperationOutcome."""
    import httpx

    server = FhirServer().start()
    try:
        bad = {"resourceType": "Bundle", "type": "transaction", "entry": [
            {"resource": {"resourceType": "Observation", "code": {"text": "x"}, "valueQuantiti": {"value": 1}}, "request": {"method": "POST", "url": "Observation"}}]}
        response = httpx.post(server.url, json=bad)
        assert response.status_code == 400
        assert "valueQuantiti" in response.json()["issue"][0]["diagnostics"]
    finally:
        server.stop()


# -- webhook ----------------------------------------------------------------------


def test_webhook_carries_no_patient_data_and_reads_the_status() -> None:
    from tests.support.delivery_servers import WebhookServer

    server = WebhookServer().start()
    try:
        dest = open_destination(Destination(name="oncall", webhook=server.url), caller())
        assert dest.check().ok and "405" in dest.check().diagnosis
        assert dest.send([], package(critical=True)).sent == ["0123456789abcdef0123456789abcdef"]
        [(headers, body)] = server.posts
        assert headers["Idempotency-Key"] == "0123456789abcdef0123456789abcdef"
        assert body["critical"] is True and body["critical_findings"][0]["name"] == "haemorrhage"
        assert body["job_url"].endswith("/jobs/0123456789abcdef0123456789abcdef")
        raw = json.dumps(body)
        for phi in ("Doe", "PAT-7", "ACC12345", "19700101", "House"):
            assert phi not in raw
        server.status = 503
        with pytest.raises(PeerUnavailable, match="HTTP 503"):
            dest.send([], package(critical=True))
    finally:
        server.stop()
    gone = open_destination(Destination(name="gone", webhook=f"http://127.0.0.1:{free_port()}/x"), caller())
    assert gone.check().kind is FailureKind.REFUSED
