"""``radnode demo``: the whole loop on one machine, with nothing to set up.

A small stand-in PACS (a pynetdicom SCP that stores what it receives and
answers series-level C-FIND) sends a generated glioma study to a radnode
node running with embedded defaults; radnode classifies the series, runs the
glioma application, writes SEG, SR, PDF and secondary captures, and sends
them back to the PACS, which the demo then lists.
"""

from __future__ import annotations

import json
import socket
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import click
from pydicom.dataset import Dataset
from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind, Verification  # type: ignore[attr-defined]

from radnode.store import jobs as jobstore
from radnode.logconfig import configure_logging
from radnode.settings import Settings


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class DemoPacs:
    """Stores every instance it receives under *folder*; answers C-FIND (SERIES)."""

    ae_title = "DEMO_PACS"

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.port = _free_port()
        self._index: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self.ae = AE(ae_title=self.ae_title)
        self.ae.supported_contexts = AllStoragePresentationContexts
        self.ae.add_supported_context(Verification)
        self.ae.add_supported_context(StudyRootQueryRetrieveInformationModelFind)

    def start(self) -> None:
        self.ae.start_server(
            ("127.0.0.1", self.port),
            block=False,
            evt_handlers=[(evt.EVT_C_STORE, self._store), (evt.EVT_C_FIND, self._find)],
        )

    def stop(self) -> None:
        self.ae.shutdown()

    def _store(self, event: Any) -> int:
        ds = event.dataset
        ds.file_meta = event.file_meta
        path = self.folder / f"{ds.SOPInstanceUID}.dcm"
        ds.save_as(path, enforce_file_format=True)
        with self._lock:
            series = self._index.setdefault(str(ds.SeriesInstanceUID), {"study": str(ds.StudyInstanceUID), "description": str(ds.get("SeriesDescription", "")), "modality": str(ds.Modality), "files": []})
            series["files"].append(path)
        return 0x0000

    def _find(self, event: Any) -> Iterator[tuple[int, Dataset | None]]:
        query = event.identifier
        study = str(query.get("StudyInstanceUID", ""))
        with self._lock:
            items = [(uid, s) for uid, s in self._index.items() if not study or s["study"] == study]
        for uid, s in items:
            ident = Dataset()
            ident.QueryRetrieveLevel = "SERIES"
            ident.StudyInstanceUID = s["study"]
            ident.SeriesInstanceUID = uid
            ident.NumberOfSeriesRelatedInstances = len(s["files"])
            yield 0xFF00, ident

    def received(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return {k: dict(v) for k, v in self._index.items()}


def run_demo(work: Path, seed: int = 3, timeout: float = 600.0) -> dict[str, Any]:
    """Run the loop; return what happened (paths, measurements, timings)."""
    from radnode.composition import Node
    from radnode.peers.dicom import Remote, store_files
    from radnode.synth.glioma import generate_glioma_study

    pacs = DemoPacs(work / "pacs")
    pacs.start()
    settings = Settings(
        data_dir=work / "data",
        port=_free_port(),
        quiet_seconds=2.0,
        peers=[{"name": "demo-pacs", "ae_title": pacs.ae_title, "host": "127.0.0.1", "port": pacs.port}],
        listener={"assembly_interval": 0.5},
        queue={"outbox_interval": 0.5},
    )
    node = Node(settings)
    node.start()
    try:
        click.echo(f"radnode listening as {settings.ae_title}@127.0.0.1:{settings.port}; demo PACS {pacs.ae_title}@127.0.0.1:{pacs.port}")
        study = generate_glioma_study(work / "study", seed=seed)
        files = sorted((work / "study" / "dicom").rglob("*.dcm"))
        t0 = time.monotonic()
        report = store_files(Remote(settings.ae_title, "127.0.0.1", settings.port, "radnode"), files, calling_ae=pacs.ae_title)
        click.echo(f"PACS sent a generated glioma study ({len(report.sent)} instances, {len(study.study.series)} series) in {time.monotonic() - t0:.1f} s")
        deadline = time.monotonic() + timeout
        job = None
        last_state = ""
        while time.monotonic() < deadline:
            with node.sessions() as session:
                jobs = jobstore.list_jobs(session)
            if jobs:
                job = jobs[0]
                if job.state != last_state:
                    click.echo(f"  job {job.job_id[:12]} {job.application}: {job.state}")
                    last_state = job.state
                if jobstore.JobState(job.state).terminal:
                    break
            time.sleep(0.5)
        if job is None or job.state != "done":
            raise click.ClickException(f"the demo job did not finish: {job.state if job else 'no job'} {job.error if job else ''}")
        with node.sessions() as session:
            measurements = {m.name: (m.value, m.unit) for m in jobstore.job_measurements(session, job.job_id)}
            sends = json.loads(jobstore.get_job(session, job.job_id).sends_json)
        results = settings.work_dir / job.job_id / "results"
        return {
            "job_id": job.job_id,
            "measurements": measurements,
            "truth": study.truth,
            "report_pdf": results / "report.pdf",
            "results_dir": results,
            "pacs_received": {k: v for k, v in pacs.received().items() if v["study"] == study.study.study_instance_uid and k not in {s.series_instance_uid for s in study.study.series}},
            "sends": sends,
            "seconds": time.monotonic() - t0,
        }
    finally:
        node.stop()
        pacs.stop()


@click.command("demo")
@click.option("--work", type=click.Path(file_okay=False, path_type=Path, resolve_path=True), default=None, help="Default: a fresh temporary folder.")
@click.option("--seed", type=int, default=3, show_default=True)
def demo(work: Path | None, seed: int) -> None:
    """Send a generated glioma study to a node with embedded defaults; show the results that came back."""
    configure_logging("warning", "console")
    work = work or Path(tempfile.mkdtemp(prefix="radnode-demo-"))
    out = run_demo(work, seed=seed)
    click.echo(f"\nglioma results ({out['seconds']:.0f} s from send to results in PACS):")
    truth = out["truth"]["volumes_ml"]
    for name, (value, unit) in out["measurements"].items():
        ref = f"   (generated truth {truth[name]:.1f})" if name in truth else ""
        click.echo(f"  {name:<20} {value:8.1f} {unit}{ref}")
    click.echo("\nnew series the demo PACS received:")
    for uid, s in out["pacs_received"].items():
        click.echo(f"  {s['modality']:<3} {len(s['files']):>3} instance(s)  {s['description']}")
    click.echo(f"\nPDF report: {out['report_pdf']}")
    click.echo(f"all result objects: {out['results_dir']}")
