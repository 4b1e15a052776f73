"""De-identified sending to an ``external: true`` destination and re-identification
of what comes back (issue 14, item 6), through real associations.

An "external analysis service" (a pynetdicom SCP on a free port) receives what
radnode sends, answers the confirming C-FIND from what it holds, computes a
result that references the images it got and C-STOREs it back to a radnode
listener. The result, re-identified from the node's own map, names the real
patient, study and images again.
"""

from __future__ import annotations

from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, StoragePresentationContexts, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    MRImageStorage,
    SecondaryCaptureImageStorage,
    StudyRootQueryRetrieveInformationModelFind,
    Verification,
)

from radnode.deid import (
    Deidentifier,
    DeidOptions,
    SqlMappingStore,
    node_secret,
    reidentify_file,
)
from radnode.listener.service import ListenerService
from radnode.model.jobs import Destination
from radnode.peers.destinations import (
    CallerIdentity,
    ExternalDicomDestination,
    open_destination,
)
from radnode.peers.dicom import Remote, store_files
from radnode.store.db import open_store
from radnode.synth.mr_study import generate_mr_study
from tests.support.ports import free_port

PHI = ("DOE^JANE", "PID-4242", "19610203", "ACC-4242", "General Hospital")


class ExternalService:
    """The outside analysis: keeps what it receives, answers a SERIES-level C-FIND."""

    def __init__(self, *, every_storage_class: bool = False) -> None:
        self.received: list[Dataset] = []
        self.ae = AE(ae_title="EXTERNAL")
        if every_storage_class:  # results: SEG, SR, encapsulated PDF, secondary captures
            self.ae.supported_contexts = StoragePresentationContexts
        else:
            self.ae.add_supported_context(MRImageStorage)
        self.ae.add_supported_context(StudyRootQueryRetrieveInformationModelFind)
        self.ae.add_supported_context(Verification)
        self.port = free_port()
        handlers = [(evt.EVT_C_STORE, self._store), (evt.EVT_C_FIND, self._find)]
        self.server = self.ae.start_server(("127.0.0.1", self.port), block=False, evt_handlers=handlers)

    def _store(self, event: evt.Event) -> int:
        ds = event.dataset
        ds.file_meta = event.file_meta
        self.received.append(ds)
        return 0x0000

    def _find(self, event: evt.Event):  # type: ignore[no-untyped-def]
        query = event.identifier
        for uid in sorted({str(d.SeriesInstanceUID) for d in self.received if str(d.StudyInstanceUID) == str(query.StudyInstanceUID)}):
            match = Dataset()
            match.QueryRetrieveLevel = "SERIES"
            match.StudyInstanceUID = query.StudyInstanceUID
            match.SeriesInstanceUID = uid
            match.NumberOfSeriesRelatedInstances = str(sum(str(d.SeriesInstanceUID) == uid for d in self.received))
            yield 0xFF00, match

    def result_for(self, source: Dataset, path: Path) -> Path:
        """A secondary capture that references *source* as the outside service would write it."""
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID = SecondaryCaptureImageStorage
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID = source.StudyInstanceUID
        ds.SeriesInstanceUID = generate_uid()
        ds.PatientName, ds.PatientID = source.PatientName, source.PatientID
        ds.AccessionNumber = source.get("AccessionNumber", "")
        ds.Modality, ds.ConversionType, ds.SeriesNumber, ds.InstanceNumber = "OT", "WSD", 901, 1
        ref = Dataset()
        ref.ReferencedSOPClassUID = source.SOPClassUID
        ref.ReferencedSOPInstanceUID = source.SOPInstanceUID
        ds.SourceImageSequence = Sequence([ref])
        ds.Rows = ds.Columns = 8
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated = ds.BitsStored = 8
        ds.HighBit, ds.PixelRepresentation = 7, 0
        ds.PixelData = bytes(64)
        ds.save_as(path, enforce_file_format=True)
        return path

    def stop(self) -> None:
        self.server.shutdown()
        self.ae.shutdown()


def _with_phi(files: list[Path]) -> list[Path]:
    for path in files:
        ds = dcmread(path)
        ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.AccessionNumber = PHI[:4]
        ds.InstitutionName = PHI[4]
        ds.save_as(path, enforce_file_format=True)
    return files


def test_external_destination_gets_deidentified_data_and_results_come_back_reidentified(make_settings, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    settings = make_settings()
    _, sessions = open_store(settings)
    deid = Deidentifier(SqlMappingStore(sessions), node_secret(settings.data_dir), DeidOptions())
    study = generate_mr_study(tmp_path / "study", seed=61, series=("t1",), slices=3)
    files = _with_phi(list(study.series[0].files))
    originals = {str(dcmread(f).SOPInstanceUID): dcmread(f) for f in files}

    external = ExternalService()
    node = ListenerService(settings)
    node.start()
    try:
        dest = Destination(name="cloud", ae_title="EXTERNAL", host="127.0.0.1", port=external.port, external=True)
        target = open_destination(dest, CallerIdentity(timeout=10.0, deid=deid))
        assert isinstance(target, ExternalDicomDestination)

        # 1. What leaves is de-identified; the report speaks of the original instances.
        report = target.send(files[:2])
        assert report.ok and sorted(report.sent) == sorted(str(dcmread(f).SOPInstanceUID) for f in files[:2])
        # A retry with the first two delivered sends only the third, again de-identified.
        report = target.send(files, done=report.sent)
        assert report.ok and report.sent == [str(dcmread(files[2]).SOPInstanceUID)]
        assert len(external.received) == 3
        for ds in external.received:
            text = repr(ds) + repr(ds.file_meta)
            assert not [p for p in PHI if p in text], text
            assert ds.PatientIdentityRemoved == "YES"
            assert str(ds.SOPInstanceUID).startswith("2.25.") and str(ds.SOPInstanceUID) not in originals
            assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert len({str(d.StudyInstanceUID) for d in external.received}) == 1  # one pseudonymous study

        # 2. The confirming C-FIND asks in pseudonyms and answers in the original UIDs.
        found = target.confirm(study.study_instance_uid, [study.series[0].series_instance_uid])
        assert found == {study.series[0].series_instance_uid: 3}

        # 3. The service's result comes back to radnode's listener ...
        first = external.received[0]
        result = external.result_for(first, tmp_path / "result.dcm")
        back = store_files(Remote("RADNODE", "127.0.0.1", settings.port, "radnode"), [result], calling_ae="EXTERNAL", timeout=10.0)
        assert back.ok
        node.flush()
        [spooled] = [p for p in node.spool.root.rglob("*.dcm") if dcmread(p, stop_before_pixels=True).Modality == "OT"]
        # ... and is re-identified from the node's own map before it goes on to PACS.
        restored = dcmread(reidentify_file(deid, spooled, tmp_path / "out" / "result.dcm"))
        source = originals[str(restored.SourceImageSequence[0].ReferencedSOPInstanceUID)]
        assert restored.StudyInstanceUID == study.study_instance_uid
        assert (str(restored.PatientName), restored.PatientID, restored.AccessionNumber) == ("DOE^JANE", "PID-4242", "ACC-4242")
        assert restored.PatientBirthDate == "19610203"
        assert source.SeriesInstanceUID == study.series[0].series_instance_uid
        assert "PatientIdentityRemoved" not in restored
    finally:
        node.stop()
        external.stop()


def test_an_external_destination_without_a_deidentifier_sends_nothing(tmp_path: Path) -> None:
    external = ExternalService()
    try:
        files = list(generate_mr_study(tmp_path / "study", seed=62, series=("t1",), slices=1).series[0].files)
        target = open_destination(Destination(name="cloud", ae_title="EXTERNAL", host="127.0.0.1", port=external.port, external=True),
                                  CallerIdentity(timeout=5.0))
        try:
            target.send(files)
        except ValueError as exc:
            assert "external" in str(exc)
        else:
            raise AssertionError("sent without de-identification")
        assert external.received == []
        assert target.check().ok  # the connectivity check needs no de-identifier
    finally:
        external.stop()


def test_the_node_sends_its_results_deidentified_to_an_external_destination(tmp_path: Path) -> None:
    """Routing (``external: true``) → worker → dispatch: SEG/SR/PDF leave de-identified, audited, confirmed in original UIDs."""
    import json

    from radnode.composition import Node
    from radnode.settings import Settings
    from radnode.store import jobs as jobstore
    from tests.conftest import wait_until
    from tests.support import dcmtk

    dcmtk.require_dcmtk("storescu")
    external = ExternalService(every_storage_class=True)
    rules = tmp_path / "routing.yaml"
    rules.write_text(
        "version: 1\n"
        "destinations:\n"
        f"  cloud: {{ae_title: EXTERNAL, host: 127.0.0.1, port: {external.port}, external: true}}\n"
        "rules:\n"
        "  - name: mr\n"
        "    match: {modalities: [MR]}\n"
        "    applications: [threshold-test]\n"
        "    destinations: [cloud]\n"
    )
    settings = Settings(
        data_dir=tmp_path / "data", port=free_port(), quiet_seconds=1.0, listener={"assembly_interval": 0.2},
        routing={"rules_file": rules}, analyzers={"plugins": ["tests.support.analyzers:ThresholdAnalyzer"]},
        queue={"retry_delays": [0.5], "max_attempts": 2, "outbox_interval": 0.3},
        results={"send_retry_delays": [0.2], "send_attempts": 2, "secondary_capture_pages": False},
    )
    node = Node(settings)
    node.start()
    try:
        generate_mr_study(tmp_path / "study", seed=63, series=("t1c", "flair"), rows=32, columns=32, slices=6)
        sent = dcmtk.storescu("127.0.0.1", settings.port, tmp_path / "study", settings.ae_title)
        assert sent.returncode == 0, sent.stderr

        def finished() -> jobstore.JobRow | None:
            with node.sessions() as s:
                jobs = jobstore.list_jobs(s)
            return jobs[0] if jobs and jobs[0].state in {"done", "failed"} else None

        job = wait_until(finished, timeout=120)
        assert job.state == "done", job.error
        sends = json.loads(job.sends_json)["cloud"]
        assert sends["delivered"] and sends["deidentified"] and sends["confirmed"], sends
        assert external.received
        for ds in external.received:
            assert ds.PatientIdentityRemoved == "YES" and str(ds.StudyInstanceUID).startswith("2.25.")
            assert str(ds.StudyInstanceUID) != job.study_instance_uid
        with node.sessions() as s:
            actions = [e.action for e in jobstore.job_events(s, job.job_id)]
        assert "sent:deidentified" in actions
    finally:
        node.stop()
        external.stop()


def test_a_result_returned_by_the_external_service_reaches_pacs_reidentified(make_settings, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The whole loop: de-identified out, result back to radnode's listener, re-identified on to the PACS that
    the original study's results go to — by the node itself (router), not by a test helper."""
    from sqlalchemy import select

    from radnode.analyzers.registry import Registry
    from radnode.deid import node_deidentifier
    from radnode.routing.setup import build_router
    from radnode.store import jobs as jobstore
    from tests.conftest import wait_until

    settings = make_settings()
    engine, sessions = open_store(settings)
    study = generate_mr_study(tmp_path / "study", seed=62, series=("t1",), slices=3)
    files = _with_phi(list(study.series[0].files))
    source_uids = {str(dcmread(f).SOPInstanceUID) for f in files}
    external, pacs = ExternalService(), ExternalService(every_storage_class=True)
    router, _ = build_router(settings, sessions, Registry.from_settings(settings))
    node = ListenerService(settings, sink=router, store=(engine, sessions))
    node.start()
    try:
        cloud = Destination(name="cloud", ae_title="EXTERNAL", host="127.0.0.1", port=external.port, external=True)
        archive = Destination(name="archive", ae_title="PACS", host="127.0.0.1", port=pacs.port)
        with sessions.begin() as s:
            jobstore.create_job(s, jobstore.JobRequest(study.study_instance_uid, "glioma", "1.0", {"t1c": study.series[0].series_instance_uid}, destinations=[archive, cloud]))
        sent = open_destination(cloud, CallerIdentity(timeout=10.0, deid=node_deidentifier(settings, sessions))).send(files)
        assert sent.ok and len(external.received) == 3

        result = external.result_for(external.received[0], tmp_path / "result.dcm")
        assert store_files(Remote("RADNODE", "127.0.0.1", settings.port, "radnode"), [result], calling_ae="EXTERNAL", timeout=10.0).ok

        pseudo_study = str(external.received[0].StudyInstanceUID)
        assert pseudo_study != study.study_instance_uid

        def explanation() -> str | None:
            with sessions() as s:
                return s.scalars(select(jobstore.RoutingDecisionRow.explanation).where(jobstore.RoutingDecisionRow.study_instance_uid == pseudo_study)).first()

        text = wait_until(explanation, timeout=30)
        assert text == "returned from an external analysis: 1 object(s) re-identified; sent to archive: 1", text
        [back] = pacs.received
        assert back.StudyInstanceUID == study.study_instance_uid
        assert (str(back.PatientName), back.PatientID, back.AccessionNumber) == ("DOE^JANE", "PID-4242", "ACC-4242")
        assert str(back.SourceImageSequence[0].ReferencedSOPInstanceUID) in source_uids
        with sessions() as s:  # not analysed as a new study
            assert not s.scalars(select(jobstore.JobRow).where(jobstore.JobRow.study_instance_uid == pseudo_study)).all()
    finally:
        node.stop()
        external.stop()
        pacs.stop()
        engine.dispose()
