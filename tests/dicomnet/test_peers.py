"""The test peers themselves: Orthanc as PACS and the DCMTK tools.

Why: later network tests (listener, send-back, C-MOVE retrieval) rely on
these helpers; if a peer is misconfigured those tests fail in confusing ways.
These tests pin down that Orthanc starts, stores, answers C-ECHO/C-FIND/
C-MOVE, and that storescu really delivers every compressed syntax with the
flags in ``STORESCU_PROPOSE``. Real processes only, no mocks.
"""

from __future__ import annotations

import time
from pathlib import Path

import pydicom
import pytest

from radnode.synth.mr_study import COMPRESS_TRANSFER_SYNTAX, GeneratedStudy, compress
from tests.support import dcmtk
from tests.support.orthanc import OrthancServer
from tests.support.ports import free_port

HOST = "127.0.0.1"


@pytest.fixture(autouse=True)
def _dcmtk() -> None:
    dcmtk.require_dcmtk()


def test_orthanc_starts_fast_and_echo_succeeds(orthanc: OrthancServer) -> None:
    assert orthanc.start_seconds is not None and orthanc.start_seconds < 5
    result = dcmtk.echoscu(HOST, orthanc.dicom_port, "ORTHANC")
    assert result.returncode == 0, result.stderr
    assert "Received Echo Response (Success)" in result.stdout + result.stderr


def test_upload_then_find_by_accession_rest_and_cfind(
    orthanc: OrthancServer, generated_study: GeneratedStudy, tmp_path: Path
) -> None:
    uploaded = orthanc.upload_dir(generated_study.out_dir)
    assert len(uploaded) == generated_study.instance_count
    assert all(u["Status"] == "Success" for u in uploaded)

    found = orthanc.find_study_by_accession(generated_study.accession)
    assert len(found) == 1
    assert found[0]["MainDicomTags"]["StudyInstanceUID"] == generated_study.study_instance_uid
    assert orthanc.find_study_by_accession("NO-SUCH-ACC") == []
    assert orthanc.series_count() == len(generated_study.series)

    result = dcmtk.findscu(
        HOST, orthanc.dicom_port, "ORTHANC",
        {"QueryRetrieveLevel": "STUDY", "AccessionNumber": generated_study.accession,
         "StudyInstanceUID": "", "NumberOfStudyRelatedInstances": ""},
        out_dir=tmp_path / "rsp",
    )
    assert result.returncode == 0, result.stderr
    responses = [pydicom.dcmread(p) for p in sorted((tmp_path / "rsp").glob("rsp*.dcm"))]
    assert [r.StudyInstanceUID for r in responses] == [generated_study.study_instance_uid]
    assert int(responses[0].NumberOfStudyRelatedInstances) == generated_study.instance_count


def test_storescu_directory_into_orthanc(
    orthanc: OrthancServer, generated_study: GeneratedStudy
) -> None:
    t0 = time.monotonic()
    result = dcmtk.storescu(HOST, orthanc.dicom_port, generated_study.out_dir, "ORTHANC")
    elapsed = time.monotonic() - t0
    assert result.returncode == 0, result.stderr
    assert dcmtk.store_failures(result) == []
    assert orthanc.instance_count() == generated_study.instance_count
    assert orthanc.series_count() == len(generated_study.series)
    [study] = orthanc.find_study_by_accession(generated_study.accession)
    assert len(study["Series"]) == len(generated_study.series)
    # 51 small images: seconds would mean the TCP_NODELAY stall is back
    assert elapsed < 3, f"storescu took {elapsed:.2f}s"


def test_storescu_delivers_each_compressed_syntax(
    orthanc: OrthancServer, generated_study: GeneratedStudy, tmp_path: Path
) -> None:
    src = generated_study.by_label("t1").files[4]
    for syntax, ts in COMPRESS_TRANSFER_SYNTAX.items():
        path = compress(src, tmp_path / f"{syntax}.dcm", syntax)  # type: ignore[arg-type]
        sop = pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID
        result = dcmtk.storescu(HOST, orthanc.dicom_port, path, "ORTHANC", propose="auto")
        assert result.returncode == 0 and dcmtk.store_failures(result) == [], (syntax, result.stderr)
        [hit] = orthanc.post("/tools/find", {"Level": "Instance", "Query": {"SOPInstanceUID": sop}})
        stored_ts = orthanc.get(f"/instances/{hit}/metadata/TransferSyntax").decode()
        assert stored_ts == ts, syntax  # travelled (and was stored) in its own encoding
        orthanc.delete(f"/instances/{hit}")


def test_storescu_without_propose_flag_fails_on_compressed(
    orthanc: OrthancServer, generated_study: GeneratedStudy, tmp_path: Path
) -> None:
    """Documents the DCMTK pitfall: rc 0 with -nh, yet the file was not stored."""
    path = compress(generated_study.files[3], tmp_path / "rle.dcm", "rle")
    result = dcmtk.storescu(HOST, orthanc.dicom_port, path, "ORTHANC", keep_going=True)
    assert result.returncode == 0
    assert any("Store Failed" in line for line in dcmtk.store_failures(result))
    assert orthanc.instance_count() == 0


def test_orthanc_sends_to_storescp_and_answers_cmove(
    orthanc: OrthancServer, generated_study: GeneratedStudy, tmp_path: Path
) -> None:
    port = free_port()
    proc = dcmtk.storescp_process(port, tmp_path / "scp", aet="RECEIVER")
    try:
        orthanc.add_modality("receiver", "RECEIVER", HOST, port)
        deadline = time.monotonic() + 10
        while not orthanc.echo_modality("receiver"):
            assert time.monotonic() < deadline, "storescp never answered C-ECHO"
            time.sleep(0.05)
        orthanc.upload_dir(generated_study.out_dir)
        [study] = orthanc.find_study_by_accession(generated_study.accession)
        # REST-driven C-STORE of one series
        series_id = study["Series"][0]
        answer = orthanc.store_to_modality("receiver", series_id)
        assert answer["FailedInstancesCount"] == 0
        n_series = answer["InstancesCount"]
        assert len(list((tmp_path / "scp").glob("MR.*"))) == n_series
        # C-MOVE of the whole study by accession, requested over DICOM
        result = dcmtk.movescu(HOST, orthanc.dicom_port, "ORTHANC",
                               {"AccessionNumber": generated_study.accession}, "RECEIVER")
        assert result.returncode == 0, result.stderr
        stored = {pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID
                  for p in (tmp_path / "scp").glob("MR.*")}
        expected = {u for s in generated_study.series for u in s.sop_instance_uids}
        assert stored == expected
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert not orthanc.echo_modality("receiver")  # peer gone: echo reports failure, no exception


def test_graceful_stop_waits_and_restart_keeps_data(
    tmp_path: Path, generated_study: GeneratedStudy
) -> None:
    """Restart on the same folder works because stop() waits for the exit."""
    from tests.support.fixtures import require_orthanc

    require_orthanc()
    server = OrthancServer(tmp_path / "pacs")
    with server:
        server.upload_files(generated_study.by_label("t2").files)
        proc = server.process
    assert proc is not None and proc.poll() is not None  # really gone
    with OrthancServer(tmp_path / "pacs", http_port=server.http_port, dicom_port=server.dicom_port,
                       fast_stop=True) as again:
        assert again.instance_count() == generated_study.by_label("t2").instance_count
        assert again.echo_modality("nonexistent") is False
