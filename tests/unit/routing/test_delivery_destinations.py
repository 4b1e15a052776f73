"""Routing files naming e-mail, HL7 and FHIR destinations and ``notify``:
validated with line and column, evaluated into job destinations."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from radnode.routing.router import job_destination
from radnode.routing.rules import RoutingFileError, StudyFacts, evaluate, load_rules, parse_rules
from radnode.routing.rules_commands import routing

REPO = Path(__file__).resolve().parents[3]

GOOD = """
version: 1
destinations:
  referring_mail: {email: referring}
  oncology: {email: [tumour-board@example.org, oncall@example.org]}
  emr_hl7: {hl7: "mllp://emr.example.org:2575"}
  emr_fhir: {fhir: "https://fhir.example.org/r4"}
  pager: {email: stroke-pager@example.org}
  oncall: {webhook: "https://chat.example.org/hooks/radnode"}
rules:
  - name: brain
    match: {modalities: MR}
    applications: [glioma]
    destinations: [referring_mail, oncology, emr_hl7, emr_fhir]
    notify: [pager, emr_hl7, oncall]
"""


def _issues(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "routing.yaml"
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    with pytest.raises(RoutingFileError) as info:
        load_rules(path)
    return [str(i).split(":", 1)[1] for i in info.value.issues]


def test_three_kinds_and_notify_evaluate_into_job_destinations() -> None:
    config = parse_rules(GOOD.lstrip("\n"))
    facts = StudyFacts(study_instance_uid="1.2.3", modalities=frozenset({"MR"}), calling_ae="PACS1", called_ae="RADNODE")
    [app] = evaluate(config, facts).applications
    dests = {d.name: job_destination(d.name, d.node) for d in app.destinations if d.node is not None}
    assert dests["referring_mail"].kind == "email" and dests["referring_mail"].email == ("referring",)
    assert dests["oncology"].email == ("tumour-board@example.org", "oncall@example.org")
    assert dests["emr_hl7"].kind == "hl7" and dests["emr_hl7"].label == "mllp://emr.example.org:2575"
    assert dests["emr_fhir"].kind == "fhir"
    assert [d.name for d in app.notify] == ["pager", "emr_hl7", "oncall"]
    assert job_destination("oncall", app.notify[2].node, notify=True).kind == "webhook"  # type: ignore[arg-type]
    pager = job_destination("pager", app.notify[0].node, notify=True)  # type: ignore[arg-type]
    assert pager.notify and pager.email == ("stroke-pager@example.org",)


def test_bad_delivery_keys_are_reported_with_line_and_column(tmp_path: Path) -> None:
    issues = _issues(
        tmp_path,
        """
        version: 1
        destinations:
          a: {email: not-an-address}
          b: {hl7: "http://emr:2575"}
          c: {fhir: "ftp://x"}
          d: {hl7: "mllp://emr:2575", fhir: "https://x/fhir"}
          e: {email: [], host: h}
          f: {email: a@example.org, smtp: x}
        rules:
          - name: r
            applications: [glioma]
            notify: [pagr]
        """,
    )
    joined = "\n".join(issues)
    assert "3:14: destinations.a.email[0]: 'not-an-address' is not an e-mail address (or 'referring')" in joined
    assert any(i.startswith("4:12:") and "mllp" in i for i in issues), issues
    assert any(i.startswith("5:13:") for i in issues), issues
    assert any(i.startswith("6:6:") and "one kind" in i for i in issues), issues
    assert any(i.startswith("7:6:") for i in issues), issues
    assert any(i.startswith("8:29:") and "unknown key 'smtp'" in i for i in issues), issues
    assert any(i.startswith("12:14:") and "unknown destination 'pagr'" in i for i in issues), issues


def test_routing_check_cli_reports_delivery_errors(tmp_path: Path) -> None:
    path = tmp_path / "routing.yaml"
    path.write_text("version: 1\ndestinations:\n  emr: {hl7: 'emr.example.org:2575'}\n")
    result = CliRunner().invoke(routing, ["check", str(path)])
    assert result.exit_code != 0
    assert f"{path}:3:14:" in result.output and "mllp" in result.output


def test_example_routing_file_documents_the_three_kinds() -> None:
    text = (REPO / "config" / "routing.yaml").read_text()
    config = load_rules(REPO / "config" / "routing.yaml")
    kinds = {job_destination(n, node).kind for n, node in config.destinations.items()}
    assert {"email", "hl7", "fhir", "webhook"} <= kinds
    assert "notify:" in text and "referring" in text
