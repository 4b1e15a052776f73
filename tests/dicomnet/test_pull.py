"""Pull by accession (issue 7): a study on a real PACS (Orthanc) is found by
C-FIND, retrieved by C-MOVE (or C-GET) into a real in-process node, and run
with exactly the requested application and options (trigger ``pull``);
every way it can go wrong leaves a message a human can act on, on the pull
record and from the CLI (exit 1)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from radnode.store import jobs as jobstore
from radnode.jobs.pull import PullError, PullRunner, get_pull, pull_job, request_pull, run_pull
from radnode.composition import Node
from radnode.store.db import open_store
from radnode.settings import Settings
from radnode.synth.mr_study import generate_mr_study
from tests.conftest import wait_until
from tests.support.ports import free_port
from tests.support.env import python_path

REPO = Path(__file__).resolve().parents[2]
PLUGIN = "tests.support.analyzers:CountingAnalyzer"
#: The rules would run glioma on every MR study: a pull must bypass that choice.
RULES = "version: 1\nrules:\n  - name: mr\n    match: {modalities: [MR]}\n    applications: [glioma]\n"


def _settings(tmp_path: Path, peers: list[dict[str, Any]], port: int | None = None) -> Settings:
    rules = tmp_path / "routing.yaml"
    rules.write_text(RULES)
    return Settings(
        data_dir=tmp_path / "data",
        port=port or free_port(),
        quiet_seconds=0.5,
        peers=peers,
        listener={"assembly_interval": 0.2},
        routing={"rules_file": rules},
        analyzers={"plugins": [PLUGIN]},
        queue={"outbox_interval": 0.3},
        results={"send": False},
    )


def _peer(port: int, ae: str = "HOSPITALPACS", **extra: Any) -> dict[str, Any]:
    return {"name": "pacs", "ae_title": ae, "host": "127.0.0.1", "port": port, **extra}


def _study(tmp_path: Path, name: str, seed: int, accession: str, patient_name: str | None = None) -> Any:
    return generate_mr_study(
        tmp_path / name, seed=seed, series=("t1c", "flair"), rows=32, columns=32, slices=5, accession=accession, patient_name=patient_name
    )


def _env(settings: Settings) -> dict[str, str]:
    """RADNODE_* for a CLI process sharing the node's data folder and peers."""
    return {
        "RADNODE_DATA_DIR": str(settings.data_dir),
        "RADNODE_AE_TITLE": settings.ae_title,
        "RADNODE_PORT": str(settings.port),
        "RADNODE_QUIET_SECONDS": str(settings.quiet_seconds),  # C-GET records the quiet period in the CLI
        "RADNODE_PEERS": json.dumps([p.model_dump() for p in settings.peers]),
        "RADNODE_ANALYZERS__PLUGINS": json.dumps([PLUGIN]),
        "RADNODE_ROUTING__RULES_FILE": str(settings.routing.rules_file),
    }


def _cli(settings: Settings, *args: str) -> Any:
    from radnode.cli import main

    return CliRunner().invoke(main, ["pull", *args], env=_env(settings))


def _routed_job(node: Node, pull_id: int, states: set[str]) -> jobstore.JobRow:
    def ready():  # type: ignore[no-untyped-def]
        row = get_pull(node.sessions, pull_id)
        job = pull_job(node.sessions, row) if row.state == "routed" else None
        return job if job is not None and job.state in states else None

    return wait_until(ready, timeout=30)


def test_a_study_is_found_by_accession_moved_and_runs_exactly_the_requested_application(orthanc_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    port = free_port()
    pacs = orthanc_factory(aet="HOSPITALPACS", modalities={"radnode": ["RADNODE", "127.0.0.1", port]})
    study = _study(tmp_path, "study", 31, "ACC-PULL-1")
    pacs.upload_dir(tmp_path / "study")
    node = Node(_settings(tmp_path, [_peer(pacs.dicom_port)], port=port))
    node.start()
    try:
        marker = tmp_path / "runs.txt"
        options = {"sleep": 0.0, "marker": str(marker)}
        seen: list[str] = []
        row = request_pull(node.settings, node.sessions, "ACC-PULL-1", "count-test", options, requested_by="test")
        assert row.state == "finding" and row.pacs == "pacs"
        final = run_pull(node.settings, node.sessions, row.id, progress=lambda r: seen.append(r.state))
        assert final.state == "received", final.message
        assert final.study_instance_uid == study.study_instance_uid
        assert final.instances_received == final.instances_expected == study.instance_count
        assert final.message == f"retrieved {study.instance_count} instances"
        assert seen[0] == "retrieving" and seen[-1] == "received"
        job = _routed_job(node, row.id, {"done", "failed", "needs-input"})
        with node.sessions() as s:
            jobs = s.query(jobstore.JobRow).filter_by(study_instance_uid=study.study_instance_uid).all()
    finally:
        node.stop()
    assert job.state == "done", job.error
    assert [j.application for j in jobs] == ["count-test"]  # not the rules' glioma
    assert job.trigger == "pull"
    assert json.loads(job.options_json) == options
    assert marker.read_text().split()[0] == job.job_id
    # return_to_sender resolves to the PACS the study was pulled from.
    assert [d["ae_title"] for d in json.loads(job.destinations_json)] == ["HOSPITALPACS"]
    routed = get_pull(node.sessions, row.id)
    assert routed.state == "routed" and job.job_id in routed.message


def test_not_found_and_several_matches_fail_with_what_was_found(orthanc_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    pacs = orthanc_factory(aet="HOSPITALPACS")
    for i, seed in enumerate((41, 42)):  # two different studies, one accession
        _study(tmp_path, f"dup{i}", seed, "DUP-7", patient_name="Zyxwv^Quorra")
        pacs.upload_dir(tmp_path / f"dup{i}")
    settings = _settings(tmp_path, [_peer(pacs.dicom_port)])
    engine, sessions = open_store(settings)
    try:
        # Through the thread runner the web app uses: recorded at once, failed in the background.
        runner = PullRunner(settings, sessions)
        row = runner.request("NOPE-1", "count-test", requested_by="web-user")
        assert row.state == "finding" and row.requested_by == "web-user"
        assert runner.join(timeout=20)
        missing = get_pull(sessions, row.id)
        assert missing.state == "failed"
        assert missing.message == f"no study with accession NOPE-1 on PACS 'pacs' (HOSPITALPACS@127.0.0.1:{pacs.dicom_port})"

        several = run_pull(settings, sessions, request_pull(settings, sessions, "DUP-7", "count-test").id)
        assert several.state == "failed" and several.study_instance_uid is None
        assert several.message.startswith("accession DUP-7 matches 2 studies on PACS 'pacs': ")
        assert several.message.count("instances [") == 2
        assert "Zyxwv" not in several.message and "Quorra" not in several.message  # no patient names
    finally:
        engine.dispose()
    result = _cli(settings, "NOPE-1", "--app", "count-test")
    assert result.exit_code == 1
    assert "no study with accession NOPE-1 on PACS 'pacs'" in result.output


def test_a_refusing_pacs_and_a_pacs_that_is_down_are_diagnosed(orthanc_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    pacs = orthanc_factory(aet="HOSPITALPACS", extra_config={"DicomCheckCalledAet": True})
    _study(tmp_path, "study", 61, "ACC-1")
    pacs.upload_dir(tmp_path / "study")
    dead = free_port()
    settings = _settings(
        tmp_path, [_peer(pacs.dicom_port, ae="WRONGAE"), {**_peer(dead), "name": "down"}, {**_peer(pacs.dicom_port), "name": "nomove"}]
    )
    engine, sessions = open_store(settings)
    try:
        refused = run_pull(settings, sessions, request_pull(settings, sessions, "ACC-1", "count-test").id)
        assert refused.state == "failed"
        assert refused.message == (
            f"PACS 'pacs' at 127.0.0.1:{pacs.dicom_port} refused the association (permanently): "
            "called AE title 'WRONGAE' not recognised — check peers[].ae_title"
        )
        down = run_pull(settings, sessions, request_pull(settings, sessions, "ACC-1", "count-test", pacs="down").id)
        assert down.state == "failed"
        assert down.message.startswith(f"could not connect to PACS 'down' at 127.0.0.1:{dead}: connection refused")
        # The PACS is fine, but radnode is not among its modalities: C-MOVE cannot deliver.
        unknown = run_pull(settings, sessions, request_pull(settings, sessions, "ACC-1", "count-test", pacs="nomove").id)
        assert unknown.state == "failed" and unknown.study_instance_uid is not None
        assert unknown.message == (
            f"C-MOVE to RADNODE from PACS 'nomove' at 127.0.0.1:{pacs.dicom_port} ended with status 0xC000: unable to process — "
            f"does the PACS know radnode as a modality (AE 'RADNODE', this host, DICOM port {settings.port})? (0 received, 0 failed, 0 with warnings)"
        )
    finally:
        engine.dispose()
    for args, wanted in ((["--pacs", "pacs"], "called AE title 'WRONGAE' not recognised"), (["--pacs", "down"], "could not connect")):
        result = _cli(settings, "ACC-1", "--app", "count-test", *args)
        assert result.exit_code == 1 and wanted in result.output, result.output


def test_invalid_requests_are_refused_before_anything_is_recorded(tmp_path: Path) -> None:
    settings = _settings(tmp_path, [_peer(free_port())])
    engine, sessions = open_store(settings)
    try:
        for accession, app, options, pacs, wanted in (
            ("AB*", "count-test", {}, None, "wildcards"),
            ("", "count-test", {}, None, "empty"),
            ("X" * 17, "count-test", {}, None, "16 characters"),
            ("ACC-1", "nope", {}, None, "unknown application 'nope'"),
            ("ACC-1", "count-test", {"bogus": 1}, None, "invalid options for count-test: bogus"),
            ("ACC-1", "count-test", {}, "other", "unknown PACS 'other'"),
        ):
            with pytest.raises(PullError, match=wanted):
                request_pull(settings, sessions, accession, app, options, pacs)
        from radnode.jobs.pull import list_pulls

        assert list_pulls(sessions) == []
    finally:
        engine.dispose()
    assert _cli(settings, "A?B", "--app", "count-test").exit_code == 1


def test_c_get_and_the_cli_with_wait(orthanc_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    # No radnode modality on this PACS: C-GET needs none.
    pacs = orthanc_factory(aet="HOSPITALPACS")
    study = _study(tmp_path, "study", 51, "ACC-GET-1")
    pacs.upload_dir(tmp_path / "study")
    node = Node(_settings(tmp_path, [_peer(pacs.dicom_port, retrieve="get")]))
    node.start()
    try:
        env = {**os.environ, **_env(node.settings), "PYTHONPATH": python_path(), "TCP_NODELAY": "1"}
        env.pop("RADNODE_CONFIG", None)
        proc = subprocess.run(
            [sys.executable, "-m", "radnode.cli", "pull", "ACC-GET-1", "--app", "count-test", "--option", "sleep=0.1", "--wait"],
            env=env, cwd=REPO, capture_output=True, text=True, timeout=60, check=False,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        out = proc.stdout
        assert "retrieving" in out and f"{study.instance_count} instances retrieved" in out, out
        job_line = [line for line in out.splitlines() if line.startswith("job ")][-1]
        assert "count-test, trigger pull" in job_line
        job_id = job_line.split()[1].rstrip(":")
        job = wait_until(lambda: (j := _job(node, job_id)) is not None and j.state in {"done", "failed"} and j, timeout=30)
    finally:
        node.stop()
    assert job.state == "done", job.error
    assert job.trigger == "pull" and json.loads(job.options_json) == {"sleep": 0.1}
    # Stored as if the PACS had pushed it: calling AE = the PACS.
    [spooled] = list((node.settings.spool_dir / study.study_instance_uid).rglob("*.dcm"))[:1]
    from pydicom import dcmread

    assert dcmread(spooled, stop_before_pixels=True).file_meta.SourceApplicationEntityTitle.strip() == "HOSPITALPACS"


def _job(node: Node, job_id: str) -> jobstore.JobRow | None:
    with node.sessions() as s:
        return s.get(jobstore.JobRow, job_id)
