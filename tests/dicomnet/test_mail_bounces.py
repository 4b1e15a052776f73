"""Bounces that come back after a result mail was accepted (RFC 3464 DSNs).

A real aiosmtpd server (STARTTLS, AUTH) receives the result mail from the
dispatch stage; the test checks the envelope sender is the job's VERP
address, then builds a real DSN (``multipart/report`` with
``message/delivery-status`` and ``text/rfc822-headers`` parts) addressed to
it, delivers it into a Maildir or an mbox, runs ``radnode mail bounces`` and
checks the job: the e-mail outcome, the audit event, ``radnode jobs show``,
the job page and the ``radnode_deliveries`` metric. Reading twice records
once; mail that is not a DSN is left where it was.
"""

from __future__ import annotations

import json
import mailbox
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from email.message import EmailMessage, Message
from email.mime.base import MIMEBase
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from radnode.model.analysis import (
    AnalyzerInputs,
    AnalyzerResult,
    AnalyzerSpec,
    Measurement,
    NoOptions,
    SeriesInput,
)
from radnode.model.jobs import AnalyzeJob, Destination
from radnode.peers.dsn import parse_dsn
from radnode.settings import Settings
from radnode.store import jobs as jobstore
from radnode.store.db import open_store
from radnode.store.deliveries import job_deliveries
from radnode.synth.mr_study import generate_mr_study
from tests.support.env import REPO, python_path
from tests.support.require import unavailable

BOUNCE = "bounces@example.org"
SENDER = "radnode@example.org"
PASSWORD = "correct horse battery"
CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')


@pytest.fixture
def smtp(tmp_path: Path) -> Iterator[Any]:
    try:
        from tests.support.delivery_servers import SmtpServer
    except ImportError as exc:
        unavailable(f"the test SMTP server needs {exc.name}")
    server = SmtpServer(tmp_path).start()
    yield server
    server.stop()


def _settings(tmp_path: Path, smtp: Any, **smtp_extra: Any) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        delivery={"smtp": smtp.settings(**smtp_extra), "job_url_base": "https://radnode.example.org"},
        results={"send_attempts": 1, "send_retry_delays": [0.1], "secondary_capture_pages": False},
        web={"secure_cookies": False, "session_secret": "test-secret-0123456789"},
    )


def _mail_results(settings: Settings, tmp_path: Path, recipients: tuple[str, ...]) -> str:
    """A job whose results the dispatch stage e-mails to *recipients*; its id."""
    study = generate_mr_study(tmp_path / "study", seed=71, series=("t1",), rows=16, columns=16, slices=1)
    [t1] = [s for s in study.series if s.label == "t1"]
    dest = Destination(name="clinicians", email=recipients)
    _, sessions = open_store(settings)
    with sessions.begin() as session:
        row, _ = jobstore.create_job(
            session, jobstore.JobRequest(study.study_instance_uid, "glioma", "1", {"t1": t1.series_instance_uid}, destinations=[dest])
        )
        job_id = row.job_id
    from radnode.sr_writer.dispatch import DicomResultWriter

    job = AnalyzeJob(job_id=job_id, study_instance_uid=study.study_instance_uid, application="glioma", model_version="1",
                     series={"t1": t1.series_instance_uid}, destinations=[dest])
    spec = AnalyzerSpec(name="glioma", version="1", description="test", required_roles=("t1",))
    inputs = AnalyzerInputs(study.study_instance_uid, {"t1": SeriesInput("t1", t1.series_instance_uid, tuple(t1.files))}, NoOptions(), job_id=job_id)
    result = AnalyzerResult(measurements=[Measurement("whole_tumor", 12.5, "mL")])
    DicomResultWriter(settings, sessions)(job, spec, inputs, result, tmp_path / "work", lambda stage: None)
    return job_id


def _block(**fields: str) -> Message:
    block = Message()
    for name, value in fields.items():
        block[name.replace("_", "-")] = value
    return block


def make_dsn(to: str, recipient: str, *, original: Message | None, message_id: str, action: str = "failed",
             status: str = "5.1.1", diagnostic: str = "smtp; 550 5.1.1 <{r}>: user unknown") -> bytes:
    """An RFC 3464 delivery status notification as a downstream MTA sends it to the envelope sender."""
    dsn = MIMEMultipart("report", report_type="delivery-status")
    dsn["From"] = "Mail Delivery System <MAILER-DAEMON@mx.hospital.example>"
    dsn["To"] = to
    dsn["Subject"] = "Undelivered Mail Returned to Sender"
    dsn["Message-ID"] = message_id
    dsn.attach(MIMEText(f"I'm sorry to have to inform you that your message could not be delivered to {recipient}.\n"))
    status_part = MIMEBase("message", "delivery-status")
    status_part.set_payload([
        _block(Reporting_MTA="dns; mx.hospital.example", Arrival_Date="Thu, 1 Jan 2026 10:00:00 +0000"),
        _block(Final_Recipient=f"rfc822; {recipient}", Original_Recipient=f"rfc822;{recipient}", Action=action,
               Status=status, Remote_MTA="dns; mailstore.hospital.example", Diagnostic_Code=diagnostic.format(r=recipient)),
    ])
    dsn.attach(status_part)
    if original is not None:
        headers = "".join(f"{name}: {value}\n" for name, value in original.items())
        dsn.attach(MIMEText(headers, "rfc822-headers"))
    return dsn.as_bytes()


def _plain(subject: str) -> bytes:
    msg = EmailMessage()
    msg["From"] = "colleague@example.org"
    msg["To"] = BOUNCE
    msg["Subject"] = subject
    msg["Message-ID"] = "<hello-1@example.org>"
    msg.set_content("Not a bounce: a person wrote to the bounce address.")
    return msg.as_bytes()


def _config(tmp_path: Path, settings: Settings, bounce_address: str | None = BOUNCE, **smtp: Any) -> Path:
    path = tmp_path / "radnode.yaml"
    path.write_text(yaml.safe_dump({"data_dir": str(settings.data_dir), "delivery": {"smtp": {"bounce_address": bounce_address, "sender": SENDER, **smtp}}}))
    return path


def _radnode(config: Path, *args: str) -> dict[str, Any]:
    """``radnode --config … <args>`` in its own process; its JSON."""
    env = {**os.environ, "PYTHONPATH": python_path()}
    env.pop("RADNODE_CONFIG", None)
    proc = subprocess.run([sys.executable, "-m", "radnode.cli", "--config", str(config), *args],
                          env=env, cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout)


def _cli(config: Path, *args: str) -> dict[str, Any]:
    from radnode.cli import main

    result = CliRunner().invoke(main, ["--config", str(config), *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _outcome(settings: Settings, job_id: str) -> dict[str, Any]:
    _, sessions = open_store(settings)
    with sessions() as session:
        return json.loads(jobstore.get_job(session, job_id).sends_json)["clinicians"]


def _events(settings: Settings, job_id: str, prefix: str = "email:") -> list[jobstore.AuditRow]:
    _, sessions = open_store(settings)
    with sessions() as session:
        return [e for e in jobstore.job_events(session, job_id) if e.action.startswith(prefix)]


def test_a_bounce_in_a_maildir_is_recorded_on_its_job_once(smtp: Any, tmp_path: Path) -> None:
    settings = _settings(tmp_path, smtp, bounce_address=BOUNCE)
    job_id = _mail_results(settings, tmp_path, ("a@example.org", "gone@example.org"))
    # The SMTP server accepted both; the envelope sender names the job, the header From does not change.
    assert smtp.handler.mail_from == [f"bounces+{job_id}@example.org"]
    [(rcpts, sent)] = smtp.messages
    assert rcpts == ["a@example.org", "gone@example.org"] and sent["From"] == SENDER and sent["X-Radnode-Job"] == job_id
    assert _outcome(settings, job_id)["delivered"] is True

    # Later the hospital's mail store bounces one recipient back to the VERP address.
    box_path = tmp_path / "bounces"
    box = mailbox.Maildir(box_path, create=True)
    dsn = make_dsn(smtp.handler.mail_from[0], "gone@example.org", original=sent, message_id="<dsn-1@mx.hospital.example>")
    box.add(dsn)
    box.add(_plain("hello"))
    config = _config(tmp_path, settings)

    first = _radnode(config, "mail", "bounces", "--maildir", str(box_path), "--json")
    assert (first["messages"], first["not_dsn"], first["recorded"]) == (2, 1, 1), first
    [res] = first["results"]
    assert (res["job_id"], res["destination"], res["recipient"], res["result"]) == (job_id, "clinicians", "gone@example.org", "recorded")

    outcome = _outcome(settings, job_id)
    [bounce] = outcome["bounces"]
    assert (bounce["recipient"], bounce["action"], bounce["status"]) == ("gone@example.org", "failed", "5.1.1")
    assert bounce["diagnostic"] == "550 5.1.1 <gone@example.org>: user unknown" and bounce["reporting_mta"] == "mx.hospital.example"
    [event] = _events(settings, job_id)
    assert event.action == "email:bounced" and "gone@example.org" in event.detail and "5.1.1" in event.detail
    [row] = job_deliveries(json.dumps([Destination(name="clinicians", email=("a@example.org", "gone@example.org")).model_dump()]),
                           json.dumps({"clinicians": outcome}))
    assert row["state"] == "failed" and row["failed"] == 1 and row["bounced"][0]["status"] == "5.1.1"

    # The DSN is marked read (cur/, S); the other mail is left as it came.
    by_subject = {m["Subject"]: m for m in mailbox.Maildir(box_path, create=False)}
    assert by_subject["Undelivered Mail Returned to Sender"].get_subdir() == "cur" and "S" in by_subject["Undelivered Mail Returned to Sender"].get_flags()
    assert by_subject["hello"].get_subdir() == "new" and by_subject["hello"].get_flags() == ""

    # Reading again records nothing; the same DSN delivered twice is recorded once.
    second = _radnode(config, "mail", "bounces", "--maildir", str(box_path), "--json")
    assert (second["already_seen"], second["not_dsn"], second["recorded"], second["results"]) == (1, 1, 0, [])
    mailbox.Maildir(box_path, create=False).add(dsn)
    third = _cli(config, "mail", "bounces", "--maildir", str(box_path), "--json")
    assert [r["result"] for r in third["results"]] == ["already recorded"]
    assert len(_events(settings, job_id)) == 1 and len(_outcome(settings, job_id)["bounces"]) == 1


def test_a_bounce_in_an_mbox_shows_on_the_job_page_jobs_show_and_metrics(smtp: Any, tmp_path: Path) -> None:
    settings = _settings(tmp_path, smtp, bounce_address=BOUNCE)
    job_id = _mail_results(settings, tmp_path, ("gone@example.org",))
    verp = smtp.handler.mail_from[0]
    assert verp == f"bounces+{job_id}@example.org"
    # Only the VERP address names the job here: the DSN returns no headers.
    mbox_path = tmp_path / "bounces.mbox"
    box = mailbox.mbox(mbox_path, create=True)
    box.add(_plain("out of office"))
    box.add(make_dsn(verp, "gone@example.org", original=None, message_id="<dsn-2@mx.hospital.example>"))
    box.flush()
    box.close()
    before = mbox_path.read_bytes()
    config = _config(tmp_path, settings)

    first = _cli(config, "mail", "bounces", "--mbox", str(mbox_path), "--json")
    assert (first["kind"], first["messages"], first["not_dsn"], first["recorded"]) == ("mbox", 2, 1, 1), first
    second = _cli(config, "mail", "bounces", "--mbox", str(mbox_path), "--json")
    assert [r["result"] for r in second["results"]] == ["already recorded"] and second["recorded"] == 0
    assert mbox_path.read_bytes() == before  # the mail system's file is not rewritten
    assert len(_events(settings, job_id)) == 1

    shown = _cli(config, "jobs", "show", job_id)
    [delivery] = shown["deliveries"]
    assert delivery["state"] == "failed" and delivery["bounced"][0]["recipient"] == "gone@example.org"
    assert "gone@example.org bounced: 5.1.1" in delivery["error"]
    assert any(e["action"] == "email:bounced" for e in shown["events"])

    from prometheus_client import generate_latest

    from radnode.metrics import make_registry

    _, sessions = open_store(settings)
    metrics = generate_latest(make_registry(sessions)).decode()
    assert 'radnode_deliveries{kind="email",notify="false",state="failed"} 1.0' in metrics

    from fastapi.testclient import TestClient

    from radnode.web.app import create_app
    from radnode.web.auth import add_user

    with sessions.begin() as session:
        add_user(session, "vera", PASSWORD, "viewer", actor="test")
    with TestClient(create_app(settings)) as client:
        token = CSRF_RE.search(client.get("/login").text).group(1)  # type: ignore[union-attr]
        r = client.post("/login", data={"username": "vera", "password": PASSWORD, "csrf_token": token, "next": "/jobs"}, follow_redirects=False)
        assert r.status_code == 303, r.text
        page = client.get(f"/jobs/{job_id}")
    assert page.status_code == 200
    deliveries = page.text.split('id="deliveries"', 1)[1].split("</section>", 1)[0]
    assert "gone@example.org" in deliveries and "5.1.1" in deliveries and "user unknown" in deliveries and "bounced" in deliveries


def test_without_a_bounce_address_the_sender_is_unchanged_and_returned_headers_name_the_job(smtp: Any, tmp_path: Path) -> None:
    settings = _settings(tmp_path, smtp)
    job_id = _mail_results(settings, tmp_path, ("a@example.org", "slow@example.org"))
    assert smtp.handler.mail_from == [SENDER]
    [(_, sent)] = smtp.messages
    box_path = tmp_path / "Maildir"
    box = mailbox.Maildir(box_path, create=True)
    # One DSN names the job by the returned X-Radnode-Job, one only by the returned Message-ID.
    box.add(make_dsn(SENDER, "a@example.org", original=sent, message_id="<dsn-3@mx.hospital.example>", status="5.2.2",
                     diagnostic="smtp; 552 5.2.2 mailbox full"))
    by_msgid = Message()
    by_msgid["Message-ID"] = sent["Message-ID"]
    box.add(make_dsn(SENDER, "slow@example.org", original=by_msgid, message_id="<dsn-4@mx.hospital.example>", action="delayed",
                     status="4.4.1", diagnostic="smtp; 421 4.4.1 connection timed out"))
    box.add(make_dsn(SENDER, "x@example.org", original=None, message_id="<dsn-5@mx.hospital.example>"))
    # The mailbox comes from delivery.smtp.bounce_mailbox here.
    scan = _cli(_config(tmp_path, settings, bounce_address=None, bounce_mailbox=str(box_path)), "mail", "bounces", "--json")
    assert scan["kind"] == "maildir" and scan["recorded"] == 2
    results = {r["recipient"]: r for r in scan["results"]}
    assert results["a@example.org"]["result"] == "recorded" and results["a@example.org"]["job_id"] == job_id
    assert results["slow@example.org"]["result"] == "recorded"
    assert results["x@example.org"]["result"] == "unmatched" and "no radnode job" in results["x@example.org"]["reason"]
    bounces = {b["recipient"]: b for b in _outcome(settings, job_id)["bounces"]}
    assert (bounces["a@example.org"]["status"], bounces["a@example.org"]["diagnostic"]) == ("5.2.2", "552 5.2.2 mailbox full")
    assert bounces["slow@example.org"]["action"] == "delayed"
    assert sorted(e.action for e in _events(settings, job_id)) == ["email:bounced", "email:delayed"]  # Maildir order is not arrival order
    assert parse_dsn(_plain("hello")) is None


def test_serve_and_worker_poll_the_bounce_mailbox(tmp_path: Path) -> None:
    """``delivery.smtp.bounce_mailbox`` set: a thread reads it every ``bounce_poll_seconds``."""
    from radnode.composition import bounce_poller
    from tests.conftest import wait_until

    box_path = tmp_path / "Maildir"
    mailbox.Maildir(box_path, create=True)
    settings = Settings(data_dir=tmp_path / "data", delivery={"smtp": {"bounce_address": BOUNCE, "bounce_mailbox": str(box_path), "bounce_poll_seconds": 0.2}})
    assert bounce_poller(Settings(data_dir=tmp_path / "data"), open_store(settings)[1]) is None
    _, sessions = open_store(settings)
    with sessions.begin() as session:
        row, _ = jobstore.create_job(session, jobstore.JobRequest("1.2.3", "glioma", "1", {"t1": "1.2.3.4"}))
        job_id = row.job_id
        jobstore.record_send(session, job_id, "clinicians", {"kind": "email", "label": "gone@example.org", "items": ["gone@example.org"],
                                                              "sent": 1, "failed": {}, "delivered": True, "at": 1.0})
    poller = bounce_poller(settings, sessions)
    assert poller is not None
    poller.start()
    try:
        mailbox.Maildir(box_path, create=False).add(make_dsn(f"bounces+{job_id}@example.org", "gone@example.org", original=None, message_id="<dsn-6@mx>"))
        wait_until(lambda: _outcome(settings, job_id).get("bounces"), timeout=10)
    finally:
        poller.stop()
    assert [e.action for e in _events(settings, job_id)] == ["email:bounced"]
