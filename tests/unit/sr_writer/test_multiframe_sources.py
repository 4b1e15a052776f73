"""Result writers on multi-frame sources: Legacy Converted Enhanced and Enhanced MR.

The same synthetic series is written once as classic instances and once as
one multi-frame object (shuffled slice order, tilted or not); the SEG must
reference the source frames by Referenced Frame Number, read back to the same
label map, and every object must pass dciodvfy. A writer failure must be a
``ResultWriteError`` naming the object, never a raw library exception.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from radnode.analyzers.base import AnalyzerResult, Finding, LabelMap, Measurement, ModelInfo
from radnode.analyzers.volumes import load_series
from radnode.sr_writer.frames import source_frames
from radnode.sr_writer.seg import label_map_for_sources, segmentation_to_label_map, sort_sources
from radnode.sr_writer.validate import dciodvfy
from radnode.sr_writer.writer import ResultWriteError, write_results
from radnode.synth.enhanced import ENHANCED_MR_IMAGE_STORAGE, to_enhanced, to_legacy_converted
from tests.support.require import unavailable
from tests.unit.sr_writer.synthetic import SEGMENTS, make_label_map, make_series, write_series

DEMO = ModelInfo("glioma-net", "1.0.0", demo=True, manufacturer="radnode", intended_use="Research only")


def _require_dciodvfy() -> None:
    if shutil.which("dciodvfy") is None:
        unavailable("dciodvfy (dicom3tools) is not installed")


def _result(label: np.ndarray) -> AnalyzerResult:
    return AnalyzerResult(
        label_maps=[LabelMap("glioma", label, "t1c", SEGMENTS)],
        measurements=[Measurement("Whole tumour volume", 10.25, "mL", segment="Whole tumour")],
        findings=[Finding("Tumour", True, 0.93, "single lesion")],
    )


@pytest.fixture(scope="module", params=[("legacy", 0.0), ("enhanced", 17.0)], ids=["legacy-axial", "enhanced-tilted"])
def multiframe(request, tmp_path_factory):  # type: ignore[no-untyped-def]
    kind, tilt = request.param
    tmp = tmp_path_factory.mktemp(f"mf-{kind}")
    classic = write_series(make_series(f"mf{tilt}", tilt_deg=tilt, shuffle=True), tmp / "classic")
    target = tmp / "mf" / "image.dcm"
    (to_legacy_converted if kind == "legacy" else to_enhanced)(classic, target)
    out = tmp / "out"
    written = write_results(job_id=f"job-mf-{kind}", result=_result(make_label_map()), model=DEMO, out_dir=out,
                            application="Glioma", source_series={"t1c": [target]})
    return kind, classic, target, written


def test_multiframe_source_is_one_object_with_every_slice(multiframe) -> None:  # type: ignore[no-untyped-def]
    kind, classic, target, _ = multiframe
    mf = pydicom.dcmread(target)
    assert int(mf.NumberOfFrames) == len(classic)
    assert "ImagePositionPatient" not in mf  # geometry lives only in the functional groups
    if kind == "enhanced":
        assert mf.SOPClassUID == ENHANCED_MR_IMAGE_STORAGE
        assert "RepetitionTime" not in mf and "EchoTime" not in mf
        assert "MRTimingAndRelatedParametersSequence" in mf.SharedFunctionalGroupsSequence[0]
    frames = source_frames([mf])
    classic_sorted = sort_sources([pydicom.dcmread(p) for p in classic])
    assert sorted(f.frame_number for f in frames) == list(range(1, len(frames) + 1))
    for f, ds in zip(frames, classic_sorted):
        assert np.allclose(f.position, [float(v) for v in ds.ImagePositionPatient], atol=1e-4)


def test_seg_references_source_frames_and_reads_back(multiframe) -> None:  # type: ignore[no-untyped-def]
    _, classic, target, written = multiframe
    mf = pydicom.dcmread(target)
    seg = pydicom.dcmread(written.paths["seg"])
    refs = [item.DerivationImageSequence[0].SourceImageSequence[0] for item in seg.PerFrameFunctionalGroupsSequence]
    assert {str(r.ReferencedSOPInstanceUID) for r in refs} == {str(mf.SOPInstanceUID)}
    numbers = {int(r.ReferencedFrameNumber) for r in refs}
    assert numbers and numbers <= set(range(1, int(mf.NumberOfFrames) + 1))
    # The label map read back through the multi-frame source equals the one written ...
    back = segmentation_to_label_map(written.paths["seg"], [mf], SEGMENTS)
    assert np.array_equal(back, make_label_map())
    # ... and every SEG frame sits on its source frame's position.
    frames = {f.frame_number: f.position for f in source_frames([mf])}
    for item, ref in zip(seg.PerFrameFunctionalGroupsSequence, refs):
        pos = [float(v) for v in item.PlanePositionSequence[0].ImagePositionPatient]
        assert np.allclose(pos, frames[int(ref.ReferencedFrameNumber)], atol=1e-3)


def test_label_map_for_multiframe_matches_classic(multiframe) -> None:  # type: ignore[no-untyped-def]
    _, classic, target, _ = multiframe
    mf = pydicom.dcmread(target)
    volume = load_series([target])  # the analyzers' loader: one slice per frame
    label = sitk.GetImageFromArray(make_label_map())
    label.CopyInformation(volume)
    assert np.array_equal(label_map_for_sources(label, [mf]), make_label_map())
    classic_volume = load_series(classic)
    assert np.allclose(classic_volume.GetOrigin(), volume.GetOrigin(), atol=1e-4)
    assert np.array_equal(sitk.GetArrayFromImage(classic_volume), sitk.GetArrayFromImage(volume))


def test_every_object_from_a_multiframe_source_is_valid(multiframe) -> None:  # type: ignore[no-untyped-def]
    _require_dciodvfy()
    _, _, target, written = multiframe
    files = written.dicom_files()
    names = {p.name for p in files}
    assert {"seg.dcm", "sr.dcm", "report_pdf.dcm", "sc_001.dcm"} <= names
    for path in files:
        assert dciodvfy(path) == [], path.name
    mf = pydicom.dcmread(target, stop_before_pixels=True)
    sr = pydicom.dcmread(written.paths["sr"])
    evidence = {str(i.ReferencedSOPInstanceUID) for s in sr.CurrentRequestedProcedureEvidenceSequence
                for r in s.ReferencedSeriesSequence for i in r.ReferencedSOPSequence}
    assert str(mf.SOPInstanceUID) in evidence


def test_writer_failure_is_a_result_write_error_naming_the_object(tmp_path: Path) -> None:
    classic = write_series(make_series("mf-bad", shuffle=False), tmp_path / "classic")
    target = to_legacy_converted(classic, tmp_path / "mf" / "image.dcm")
    wrong = make_label_map()[:-2]  # two slices short of the source
    with pytest.raises(ResultWriteError, match=r"^(volumes|SEG|key images): "):
        write_results(job_id="job-bad", result=_result(wrong), model=DEMO, out_dir=tmp_path / "out",
                      application="Glioma", source_series={"t1c": [target]})
    # A source that is not an image at all fails while reading, with the series named.
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"not dicom")
    with pytest.raises(ResultWriteError, match="reading the t1c series"):
        write_results(job_id="job-junk", result=_result(make_label_map()), model=DEMO, out_dir=tmp_path / "out2",
                      application="Glioma", source_series={"t1c": [junk]})


def test_dispatch_writer_failure_fails_the_job_permanently_with_the_reason(tmp_path: Path) -> None:
    """The worker's result writer raises a ResultWriteError naming the object; the worker fails the job with it, no retry."""
    from radnode.analyzers.base import AnalyzerInputs, AnalyzerSpec, SeriesInput
    from radnode.model.jobs import AnalyzeJob
    from radnode.settings import Settings
    from radnode.sr_writer.dispatch import DicomResultWriter
    from radnode.store import jobs as store
    from radnode.store.db import open_store

    settings = Settings(data_dir=tmp_path / "data")
    _, sessions = open_store(settings)
    series = make_series("mf-dispatch", shuffle=False)
    classic = write_series(series, tmp_path / "classic")
    target = to_legacy_converted(classic, tmp_path / "mf" / "image.dcm")
    study_uid = str(series[0].StudyInstanceUID)
    with sessions.begin() as s:
        row, _ = store.create_job(s, store.JobRequest(study_uid, "glioma", "1.0.0", {"t1c": "1.2.3"}))
        job_id = row.job_id
    job = AnalyzeJob(job_id=job_id, study_instance_uid=study_uid, application="glioma", model_version="1.0.0", series={"t1c": "1.2.3"})
    spec = AnalyzerSpec("glioma", "1.0.0", "test", ("t1c",), model=DEMO, outputs=("seg", "sr", "pdf"))
    inputs = AnalyzerInputs(study_uid, {"t1c": SeriesInput("t1c", "1.2.3", (target,))}, options=None, job_id=job_id)  # type: ignore[arg-type]
    writer = DicomResultWriter(settings, sessions)
    with pytest.raises(ResultWriteError, match=r"writing results failed: (volumes|SEG|key images): "):
        writer(job, spec, inputs, _result(make_label_map()[:-3]), tmp_path / "work", lambda stage: None)
