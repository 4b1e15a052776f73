"""The hemorrhage results as DICOM: SEG, TID 1500 SR, PDF, Encapsulated PDF and secondary captures.

The analysis is real (phantom + oracle ONNX model, see
``tests.support.hemorrhage_cases``); every object is read back, validated with
dciodvfy, and its values compared with the analyzer's JSON — the SR is parsed
item by item, so a value that changed on its way into DICOM fails here. The
last tests run ``radnode analyze hemorrhage … --json`` as a user would.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import highdicom as hd
import numpy as np
import pydicom
import pytest

from radnode.analyzers.hemorrhage.analyzer import HemorrhageAnalyzer
from radnode.analyzers.hemorrhage.subtypes import DISPLAY, SUBTYPES
from radnode.sr_writer.seg import segmentation_to_label_map, sort_sources
from radnode.sr_writer.validate import dciodvfy_report
from radnode.sr_writer.writer import WrittenObjects, write_results
from radnode.synth.mr_study import generate_mr_study
from tests.support.ct_phantom import write_ct_series
from tests.support.hemorrhage_cases import TILT, Case, oracle_analyzer, run_case
from tests.support.hemorrhage_oracle import oracle_graph, write_oracle_model
from tests.support.require import unavailable

pytestmark = pytest.mark.timeout(180)

REPO = Path(__file__).resolve().parents[3]
FILES = ("seg.dcm", "sr.dcm", "report.pdf", "report_pdf.dcm")


def _require(tool: str) -> None:
    if shutil.which(tool) is None and not Path(f"/usr/bin/{tool}").is_file():
        unavailable(f"{tool} not installed")


@pytest.fixture(scope="module")
def analyzer(tmp_path_factory: pytest.TempPathFactory) -> HemorrhageAnalyzer:
    return oracle_analyzer(tmp_path_factory.mktemp("models"))


def _write(analyzer: HemorrhageAnalyzer, case: Case, out: Path) -> WrittenObjects:
    assert analyzer.spec.model is not None
    return write_results(job_id=f"job-{out.name}", result=case.result, model=analyzer.spec.model, out_dir=out,
                         application="hemorrhage", source_series={"ct_brain": list(case.series.files)}, check_iod=True)


@pytest.fixture(scope="module")
def positive(analyzer: HemorrhageAnalyzer, tmp_path_factory: pytest.TempPathFactory) -> tuple[Case, WrittenObjects]:
    root = tmp_path_factory.mktemp("positive")
    case = run_case(analyzer, root)
    return case, _write(analyzer, case, root / "out")


# -- reading the SR back --------------------------------------------------------------------------------------


def _code(item: Any) -> tuple[str, str]:
    c = item.ConceptNameCodeSequence[0]
    return str(c.CodeValue), str(c.CodingSchemeDesignator)


def sr_groups(path: Path) -> dict[str, dict[str, Any]]:
    """Every TID 1500 measurement group by tracking identifier: finding, evaluation, measurements, references."""
    ds = pydicom.dcmread(path)
    [imaging] = [i for i in ds.ContentSequence if _code(i) == ("126010", "DCM")]
    groups: dict[str, dict[str, Any]] = {}
    for group in imaging.ContentSequence:
        g: dict[str, Any] = {"measurements": [], "evaluations": {}, "segment": None}
        for item in group.ContentSequence:
            code = _code(item)
            if code == ("112039", "DCM"):
                g["id"] = str(item.TextValue)
            elif code == ("121071", "DCM"):
                g["finding"] = (str(item.ConceptCodeSequence[0].CodeValue), str(item.ConceptCodeSequence[0].CodingSchemeDesignator))
            elif item.ValueType == "CODE" and item.RelationshipType == "CONTAINS" and code != ("276214006", "SCT"):
                g["evaluations"][code] = str(item.ConceptCodeSequence[0].CodeValue)
            elif item.ValueType == "NUM":
                sub = list(item.get("ContentSequence", []))
                method = next((str(s.ConceptCodeSequence[0].CodeValue) for s in sub if _code(s) == ("370129005", "SCT")), None)
                images = [str(s.ReferencedSOPSequence[0].ReferencedSOPInstanceUID) for s in sub if s.ValueType == "IMAGE"]
                mv = item.MeasuredValueSequence[0]
                g["measurements"].append({"concept": code, "value": float(mv.NumericValue), "method": method, "images": images,
                                          "unit": str(mv.MeasurementUnitsCodeSequence[0].CodeValue)})
            elif item.ValueType == "IMAGE" and "ReferencedSegmentNumber" in item.ReferencedSOPSequence[0]:
                g["segment"] = int(item.ReferencedSOPSequence[0].ReferencedSegmentNumber)  # TID 1411 Referenced Segment
        groups[g["id"]] = g
    return groups


def _one(group: dict[str, Any], concept: tuple[str, str], method: str | None = None) -> dict[str, Any]:
    [m] = [m for m in group["measurements"] if m["concept"] == concept and m["method"] == method]
    return m


PROBABILITY, VOLUME = ("122157", "DCM"), ("118565006", "SCT")
PRESENT, ABSENT = "52101004", "272519000"


def assert_sr_matches(sr: Path, summary: dict[str, Any]) -> None:
    """Every value of the analyzer's JSON is in the SR, and the SR says nothing else about these subjects."""
    groups = sr_groups(sr)
    any_group = groups[DISPLAY["any"]]
    assert any_group["finding"] == ("1386000", "SCT")
    assert list(any_group["evaluations"].values()) == [PRESENT if summary["any"]["present"] else ABSENT]
    p = _one(any_group, PROBABILITY)
    assert p["value"] == summary["any"]["probability"] and p["unit"] == "{probability}"
    flagged = [r["sop_instance_uid"] for r in summary["slices"] if r["probabilities"]["any"] >= 0.5]
    assert p["images"] == flagged
    assert _one(any_group, VOLUME)["value"] == summary["volume_ml"]
    for name in SUBTYPES:
        g, s = groups[DISPLAY[name]], summary["subtypes"][name]
        assert list(g["evaluations"].values()) == [PRESENT if s["present"] else ABSENT]
        p = _one(g, PROBABILITY)
        assert p["value"] == s["probability"]
        assert p["images"] == [r["sop_instance_uid"] for r in summary["slices"] if r["probabilities"][name] >= 0.5]
        volumes = [m for m in g["measurements"] if m["concept"] == VOLUME and m["method"] is None]
        if s["present"]:
            assert [m["value"] for m in volumes] == [s["volume_ml"]] and volumes[0]["unit"] == "ml"
            assert g["segment"] == 1  # the volume's group references its SEG segment
        else:
            assert volumes == [] and s["volume_ml"] == 0.0 and g["segment"] is None
    est = summary["abc2"]
    iph = groups[DISPLAY["intraparenchymal"]]
    if est is None:
        assert all(m["method"] is None for m in iph["measurements"])
        return
    assert _one(iph, VOLUME, "ABC2")["value"] == est["volume_ml"]
    assert _one(iph, ("103339001", "SCT"), "ABC2")["value"] == est["a_mm"]
    assert _one(iph, ("131189007", "SCT"), "ABC2")["value"] == est["b_mm"]
    assert _one(iph, ("121207", "DCM"), "ABC2")["value"] == est["c_mm"]


def assert_valid_dicom(out: Path) -> None:
    _require("dciodvfy")
    for path in sorted(out.glob("*.dcm")):
        report = dciodvfy_report(path)
        assert report is not None
        errors, _warnings = report
        assert errors == [], (path.name, errors)


# -- the positive study ---------------------------------------------------------------------------------------


def test_every_object_is_written_and_valid(positive: tuple[Case, WrittenObjects]) -> None:
    case, written = positive
    out = Path(written.paths["sr"]).parent  # type: ignore[arg-type]
    assert all((out / name).is_file() for name in FILES)
    scs = written.paths["secondary_captures"]
    assert isinstance(scs, list) and len(scs) >= 3  # the key slice, the strip, the report pages
    comments = [str(pydicom.dcmread(p).ImageComments) for p in scs]
    assert comments[0].startswith("Key image: Intraparenchymal hemorrhage: source slice")
    assert comments[1].startswith("Key image: Per-slice probability") and comments[2].startswith("Report page 1 of")
    assert_valid_dicom(out)


def test_seg_holds_the_present_subtype_on_the_source_slices(positive: tuple[Case, WrittenObjects]) -> None:
    case, written = positive
    seg = hd.seg.segread(written.paths["seg"])
    [desc] = seg.SegmentSequence
    assert desc.SegmentLabel == "Intraparenchymal hemorrhage"
    assert desc.SegmentedPropertyTypeCodeSequence[0].CodeValue == "274100004"
    [lm] = case.result.label_maps
    sources = sort_sources([pydicom.dcmread(f) for f in case.series.files])
    back = segmentation_to_label_map(seg, sources, lm.segments)
    np.testing.assert_array_equal(back, lm.array)
    # The segment's voxels give the JSON's volume (model grid) within the resampling difference.
    voxel_ml = 2.0 * 2.0 * 5.0 / 1000.0
    assert np.count_nonzero(back == 3) * voxel_ml == pytest.approx(case.summary["volume_ml"], rel=0.03)


def test_sr_values_equal_the_json(positive: tuple[Case, WrittenObjects]) -> None:
    case, written = positive
    assert_sr_matches(Path(written.paths["sr"]), case.summary)  # type: ignore[arg-type]


def test_pdf_says_what_was_found(positive: tuple[Case, WrittenObjects]) -> None:
    case, written = positive
    _require("pdftotext")
    text = subprocess.run(["pdftotext", "-layout", str(written.paths["pdf"]), "-"], capture_output=True, text=True,
                          check=True).stdout
    s = case.summary
    assert "DEMO" in text and "Key slices (brain, subdural and bone windows; haemorrhage outlined)" in text
    assert f"{s['subtypes']['intraparenchymal']['volume_ml']:.2f}" in text
    assert f"{s['abc2']['volume_ml']:.2f}" in text and "ABC/2 (Kothari)" in text
    assert "Intraparenchymal hemorrhage" in text and "Present" in text and "Absent" in text


# -- negative and tilted -------------------------------------------------------------------------------------------


def test_a_negative_study_writes_no_seg_but_a_valid_sr_and_report(analyzer: HemorrhageAnalyzer, tmp_path: Path) -> None:
    case = run_case(analyzer, tmp_path / "negative", blob_hu=None, seed=1)
    written = _write(analyzer, case, tmp_path / "out")
    assert written.paths["seg"] is None and not (tmp_path / "out" / "seg.dcm").exists()
    assert all((tmp_path / "out" / name).is_file() for name in FILES[1:])
    assert_sr_matches(tmp_path / "out" / "sr.dcm", case.summary)
    comments = [str(pydicom.dcmread(p).ImageComments) for p in written.paths["secondary_captures"]]  # type: ignore[union-attr]
    assert comments[0].startswith("Key image: Per-slice probability")  # no key slice: nothing to outline
    assert_valid_dicom(tmp_path / "out")


def test_a_tilted_series_gets_a_valid_seg_on_its_sheared_slices(analyzer: HemorrhageAnalyzer, tmp_path: Path) -> None:
    case = run_case(analyzer, tmp_path / "tilted", tilt_deg=TILT, encoding="ipp", seed=3)
    written = _write(analyzer, case, tmp_path / "out")
    seg = hd.seg.segread(written.paths["seg"])
    sources = sort_sources([pydicom.dcmread(f) for f in case.series.files])
    [lm] = case.result.label_maps
    np.testing.assert_array_equal(segmentation_to_label_map(seg, sources, lm.segments), lm.array)
    assert_sr_matches(Path(written.paths["sr"]), case.summary)  # type: ignore[arg-type]
    assert_valid_dicom(tmp_path / "out")


# -- radnode analyze hemorrhage ---------------------------------------------------------------------------------


def _analyze(study: Path, out: Path, models: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("RADNODE_")}
    env = {**base, "RADNODE_ANALYZERS__MODEL_DIRS": json.dumps([str(models)]),
           "RADNODE_ANALYZERS__PROVIDERS": '["CPUExecutionProvider"]'}
    return subprocess.run([sys.executable, "-m", "radnode.cli", "analyze", "hemorrhage", str(study), "--out", str(out),
                           "--json", "--option", "model=hemorrhage-oracle", *extra],
                          capture_output=True, text=True, cwd=REPO, env=env, timeout=300)


def test_the_command_prints_the_issue_schema_and_writes_the_objects(tmp_path: Path) -> None:
    write_oracle_model(tmp_path / "models" / "hemorrhage-oracle")
    series = write_ct_series(tmp_path / "study", seed=4)
    res = _analyze(tmp_path / "study", tmp_path / "out", tmp_path / "models")
    assert res.returncode == 0, res.stderr[-3000:]
    doc = json.loads(res.stdout)
    assert doc["state"] == "done" and doc["application"] == "hemorrhage"
    assert set(doc) >= {"application", "any", "subtypes", "volume_ml", "slices", "model"}
    assert set(doc["any"]) == {"present", "probability"} and doc["any"]["present"] is True
    assert set(doc["subtypes"]) == set(SUBTYPES)
    for v in doc["subtypes"].values():
        assert set(v) == {"present", "probability", "volume_ml"}
        assert isinstance(v["present"], bool) and isinstance(v["probability"], float) and isinstance(v["volume_ml"], float)
    assert isinstance(doc["volume_ml"], float) and doc["volume_ml"] > 10
    # The option names the oracle although the shipped demo (a higher version) is the default: the
    # summary and every written object name the model that ran, not the default.
    assert doc["model"] == {"name": "hemorrhage-oracle", "version": "0.1.0", "demo": True}
    for name in ("seg.dcm", "sr.dcm", "report_pdf.dcm"):
        ds = pydicom.dcmread(tmp_path / "out" / name, stop_before_pixels=True)
        assert ds.ManufacturerModelName == "radnode hemorrhage-oracle", name
        assert "hemorrhage-oracle 0.1.0" in list(ds.SoftwareVersions), name
    assert len(doc["slices"]) == 30
    for row, w in zip(doc["slices"], series.slices):
        assert set(row) == {"sop_instance_uid", "instance_number", "probabilities"}
        assert row["sop_instance_uid"] == w.sop_instance_uid and row["instance_number"] == w.instance_number
        assert set(row["probabilities"]) == {"any", *SUBTYPES}
    out = tmp_path / "out"
    assert all((out / name).is_file() for name in FILES) and sorted(out.glob("sc_*.dcm"))
    assert doc["objects"]["seg"] == str(out / "seg.dcm")
    assert json.loads((out / "result.json").read_text()) == doc
    assert_sr_matches(out / "sr.dcm", doc)
    assert_valid_dicom(out)


def test_the_command_reports_a_missing_ct_and_a_broken_model(tmp_path: Path) -> None:
    models = tmp_path / "models"
    write_oracle_model(models / "hemorrhage-oracle")
    generate_mr_study(tmp_path / "mr", seed=5, rows=32, columns=32, slices=4)
    res = _analyze(tmp_path / "mr", tmp_path / "out1", models)
    assert res.returncode == 3, res.stderr[-2000:]
    doc = json.loads(res.stdout)
    assert doc["state"] == "needs-input" and doc["application"] == "hemorrhage"
    assert [m["role"] for m in doc["missing"]] == ["ct_brain"]

    good = oracle_graph()
    (models / "hemorrhage-oracle" / "model.onnx").write_bytes(good[:100])  # truncated copy
    write_ct_series(tmp_path / "ct", n=8, rows=64, cols=64, spacing=3.2)
    res = _analyze(tmp_path / "ct", tmp_path / "out2", models)
    assert res.returncode == 1
    doc = json.loads(res.stdout)
    assert doc["state"] == "failed" and "sha256 mismatch" in doc["error"] and "hemorrhage-oracle" in doc["error"]
