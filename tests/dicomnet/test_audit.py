"""The audit trail (issue 14): associations accepted and refused with a reason,
studies received, logins; exported as JSON lines by `radnode audit export`."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from radnode.cli import main as cli_main
from radnode.listener.service import ListenerService
from radnode.synth.mr_study import generate_mr_study
from tests.conftest import wait_until
from tests.support import dcmtk


def _export(data_dir: Path, *args: str) -> list[dict]:  # type: ignore[type-arg]
    res = CliRunner().invoke(cli_main, ["audit", "export", *args], env={"RADNODE_DATA_DIR": str(data_dir)})
    assert res.exit_code == 0, res.output
    return [json.loads(line) for line in res.output.splitlines() if line.startswith("{")]


def test_associations_and_received_studies_are_audited_and_exported(make_settings, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    service = ListenerService(make_settings(listener={"allowed_calling_aes": ["MODALITY1"]}))
    service.start()
    try:
        port = service.settings.port
        study = generate_mr_study(tmp_path / "study", seed=31, series=("t1",), slices=2)
        assert dcmtk.storescu("127.0.0.1", port, tmp_path / "study", "RADNODE", calling_ae="MODALITY1").returncode == 0
        assert dcmtk.echoscu("127.0.0.1", port, "RADNODE", calling_ae="INTRUDER").returncode != 0

        def entries() -> list[dict]:  # type: ignore[type-arg]
            return _export(service.settings.data_dir, "--since", "2000-01-01")

        got = wait_until(lambda: (e := entries()) and any(x["action"] == "dicom:received" for x in e) and e)
    finally:
        service.stop()
    by_action = {e["action"]: e for e in got}
    assert by_action["dicom:accepted"]["actor"] == "MODALITY1" and by_action["dicom:accepted"]["source"] == "127.0.0.1"
    received = by_action["dicom:received"]
    assert received["study_instance_uid"] == study.study_instance_uid and received["detail"] == "2 instance(s)"
    rejected = by_action["dicom:rejected"]
    assert rejected["actor"] == "INTRUDER" and "calling AE title not allowed" in rejected["detail"]
    for e in got:
        assert set(e) == {"id", "time", "actor", "action", "source", "job_id", "study_instance_uid", "detail"}
    # --since after everything: nothing; and the export itself was audited.
    assert _export(service.settings.data_dir, "--since", "2999-01-01") == []
    assert any(e["action"] == "audit:export" for e in _export(service.settings.data_dir))


def test_refused_on_accept_is_audited(make_settings) -> None:  # type: ignore[no-untyped-def]
    service = ListenerService(make_settings(listener={"allowed_hosts": ["10.1.2.0/24"]}))
    service.start()
    try:
        assert dcmtk.echoscu("127.0.0.1", service.settings.port, "RADNODE").returncode != 0
        got = wait_until(lambda: [e for e in _export(service.settings.data_dir) if e["action"] == "dicom:refused"])
    finally:
        service.stop()
    assert got[0]["source"] == "127.0.0.1" and got[0]["detail"] == "source address not allowed"


def test_forward_sends_dicom_audit_messages_over_tls_syslog(tmp_path: Path) -> None:
    """`radnode audit forward` to a TLS syslog receiver (RFC 5425 framing, PS3.15 A.5 XML), resuming after the last id."""
    import socket
    import ssl
    import subprocess
    import threading
    import xml.etree.ElementTree as ET

    from radnode.store.db import open_store
    from radnode.settings import Settings
    from radnode.web.auth import add_user

    d = tmp_path / "pki"
    d.mkdir()
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "k.pem", "-out", "c.pem", "-days", "1",
                    "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1"], cwd=d, check=True, capture_output=True)
    settings = Settings(data_dir=tmp_path / "data")
    _, sessions = open_store(settings)
    with sessions.begin() as s:
        add_user(s, "alice", "a long password", "viewer", actor="adam")

    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(d / "c.pem", d / "k.pem")
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    received: list[bytes] = []

    def serve() -> None:
        for _ in range(2):
            conn, _addr = listener.accept()
            with server_ctx.wrap_socket(conn, server_side=True) as tls:
                buf = b""
                while chunk := tls.recv(65536):
                    buf += chunk
                received.append(buf)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    env = {"RADNODE_DATA_DIR": str(settings.data_dir)}
    args = ["audit", "forward", "--host", "127.0.0.1", "--port", str(port), "--ca-file", str(d / "c.pem")]
    res = CliRunner().invoke(cli_main, args, env=env)
    assert res.exit_code == 0, res.output
    with sessions.begin() as s:
        from radnode.store.jobs import record_event

        record_event(s, "mallory", "login:failed", source="10.0.0.66")
    res = CliRunner().invoke(cli_main, args, env=env)
    assert res.exit_code == 0, res.output
    t.join(10)
    assert len(received) == 2

    def messages(stream: bytes) -> list[ET.Element]:
        out = []
        while stream:
            length, _, rest = stream.partition(b" ")
            msg, stream = rest[: int(length)], rest[int(length):]
            assert msg.startswith(b"<85>1 ")
            out.append(ET.fromstring(msg.split(b"\xef\xbb\xbf", 1)[1]))
        return out

    first, second = messages(received[0]), messages(received[1])
    assert [m.find("EventIdentification/EventTypeCode").get("csd-code") for m in first] == ["110137"]  # user added
    [failed] = second  # only the new entry: the cursor resumed after the last id
    ev = failed.find("EventIdentification")
    assert ev.find("EventID").get("csd-code") == "110114" and ev.get("EventOutcomeIndicator") == "4"
    who = failed.find("ActiveParticipant")
    assert who.get("UserID") == "mallory" and who.get("NetworkAccessPointID") == "10.0.0.66"
