"""Connectivity checks of result destinations (CLI and web page) against
real servers: SMTP EHLO/STARTTLS/AUTH, an MLLP connection, FHIR /metadata."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Iterator

import pytest
import yaml
from click.testing import CliRunner
from fastapi.testclient import TestClient

from radnode.cli import main
from radnode.settings import load
from radnode.store.db import open_store
from radnode.web.app import create_app
from radnode.web.auth import add_user
from tests.support.delivery_servers import FhirServer, MllpServer, SmtpServer
from tests.support.ports import free_port


@pytest.fixture
def config(tmp_path: Path) -> Iterator[Path]:
    smtp = SmtpServer(tmp_path).start()
    mllp = MllpServer("AA").start()
    fhir = FhirServer().start()
    rules = tmp_path / "routing.yaml"
    rules.write_text(
        "version: 1\n"
        "destinations:\n"
        "  mail: {email: [a@example.org]}\n"
        f"  emr: {{hl7: '{mllp.url}'}}\n"
        f"  ehr: {{fhir: '{fhir.url}'}}\n"
        f"  gone: {{hl7: 'mllp://127.0.0.1:{free_port()}'}}\n"
        f"  nofhir: {{fhir: 'http://127.0.0.1:{free_port()}/fhir'}}\n"
    )
    path = tmp_path / "radnode.yaml"
    path.write_text(yaml.safe_dump({
        "data_dir": str(tmp_path / "data"),
        "routing": {"rules_file": str(rules)},
        "delivery": {"smtp": smtp.settings()},
        "web": {"secure_cookies": False, "session_secret": "test-secret-0123456789"},
    }))
    yield path
    smtp.stop()
    mllp.stop()
    fhir.stop()


def test_cli_checks_every_destination(config: Path) -> None:
    result = CliRunner().invoke(main, ["--config", str(config), "destinations", "check", "--json", "--timeout", "2"])
    assert result.exit_code == 1, result.output  # two destinations are down
    checks = {c["destination"]: c for c in json.loads(result.stdout)}
    assert checks["mail"]["ok"] and "STARTTLS" in checks["mail"]["diagnosis"] and "AUTH" in checks["mail"]["diagnosis"]
    assert checks["emr"]["ok"] and checks["emr"]["kind"] == "hl7"
    assert checks["ehr"]["ok"] and "4.0.1" in checks["ehr"]["diagnosis"]
    assert not checks["gone"]["ok"] and "connection refused" in checks["gone"]["diagnosis"]
    assert not checks["nofhir"]["ok"] and "cannot connect" in checks["nofhir"]["diagnosis"]
    one = CliRunner().invoke(main, ["--config", str(config), "destinations", "check", "emr"])
    assert one.exit_code == 0 and one.output.startswith("ok")


def test_connectivity_page_checks_destinations(config: Path) -> None:
    settings = load(config)
    _, sessions = open_store(settings)
    with sessions.begin() as s:
        add_user(s, "adam", "correct horse battery", "admin", actor="test")
    with TestClient(create_app(settings)) as client:
        token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/login").text).group(1)  # type: ignore[union-attr]
        client.post("/login", data={"username": "adam", "password": "correct horse battery", "csrf_token": token, "next": "/connectivity"})
        page = client.get("/connectivity")
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
        answer = client.post("/connectivity", data={"csrf_token": csrf, "destination": ""})
    assert answer.status_code == 200
    section = answer.text[answer.text.index('id="destinations"'):]
    assert section.count("state-done") == 3 and section.count("state-failed") == 2
    assert "EHLO, STARTTLS, AUTH ok" in section


def test_api_checks_destinations_for_admins_only(config: Path) -> None:
    from radnode.web.auth import add_token

    settings = load(config)
    _, sessions = open_store(settings)
    with sessions.begin() as s:
        admin = add_token(s, "ops-admin", "admin", actor="test")
        viewer = add_token(s, "ops-viewer", "viewer", actor="test")
    with TestClient(create_app(settings)) as client:
        refused = client.post("/api/connectivity/destinations", json={}, headers={"Authorization": f"Bearer {viewer}"})
        answer = client.post("/api/connectivity/destinations", json={}, headers={"Authorization": f"Bearer {admin}"})
        one = client.post("/api/connectivity/destinations", json={"destination": "emr"}, headers={"Authorization": f"Bearer {admin}"})
        unknown = client.post("/api/connectivity/destinations", json={"destination": "nowhere"}, headers={"Authorization": f"Bearer {admin}"})
    assert refused.status_code == 403
    assert answer.status_code == 200, answer.text
    checks = {c["destination"]: c for c in answer.json()}
    assert {n for n, c in checks.items() if c["ok"]} == {"mail", "emr", "ehr"}
    assert checks["gone"]["kind"] == "hl7" and "connection refused" in checks["gone"]["diagnosis"]
    assert [c["destination"] for c in one.json()] == ["emr"] and one.json()[0]["ok"]
    assert unknown.status_code == 404 and "nowhere" in unknown.json()["detail"]
