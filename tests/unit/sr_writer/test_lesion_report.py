"""Per-lesion results and the RANO follow-up in SR, PDF, SEG and SC.

The SR is read back (pydicom, independent of the builder) and every lesion
value, unit, code and coordinate is compared with what the job measured;
every object must pass dciodvfy with neither errors nor warnings, and
dcentvfy must find sources and results consistent.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest

from radnode.analyzers.base import AnalyzerResult, LabelMap, Measurement, ModelInfo
from radnode.analyzers.glioma.followup import annotate
from radnode.model.branding import ReportBranding
from radnode.model.lesions import Bidimensional, Lesion, RanoCategory
from radnode.sr_writer.sr import LOCAL_SCHEME
from radnode.sr_writer.validate import dcentvfy, dciodvfy_report
from radnode.sr_writer.writer import write_results
from tests.support.require import unavailable
from tests.unit.sr_writer.synthetic import (
    SEGMENTS,
    make_label_map,
    make_series,
    write_series,
)

MODEL = ModelInfo("glioma-net", "1.0.0", demo=True, manufacturer="radnode", intended_use="Research only")


def _require(tool: str) -> None:
    if shutil.which(tool) is None and not Path(f"/usr/bin/{tool}").is_file():
        unavailable(f"{tool} not installed")


def _lesions() -> list[Lesion]:
    big = Lesion(
        index=1,
        volumes_ml={"whole_tumor": 6.2, "tumor_core": 1.9, "enhancing": 1.5, "necrotic": 0.4, "edema": 4.3},
        centroid_lps_mm=(-2.5, 0.0, -1.0),
        offset_from_brain_mm=(12.0, -30.0, 8.0),
        hemisphere="left",
        region="frontal",
        max_axial_diameter_mm=24.0,
        bidimensional=Bidimensional(16.0, 12.5, -1.0, ((-10.0, 0.0, -1.0), (6.0, 0.0, -1.0)), ((-2.0, -6.0, -1.0), (-2.0, 6.5, -1.0))),
        ellipsoid_lps_mm=((-14.0, 0, -1), (9.0, 0, -1), (-2.5, -9, -1), (-2.5, 9, -1), (-2.5, 0, -8), (-2.5, 0, 6)),
    )
    small = Lesion(
        index=2,
        volumes_ml={"whole_tumor": 0.6, "tumor_core": 0.3, "enhancing": 0.3, "necrotic": 0.0, "edema": 0.3},
        centroid_lps_mm=(-12.0, -10.0, 5.0),
        offset_from_brain_mm=(-40.0, 20.0, 10.0),
        hemisphere="right",
        region="parietal",
        max_axial_diameter_mm=9.0,
        bidimensional=Bidimensional(8.0, 6.0, 5.0, ((-16.0, -10.0, 5.0), (-8.0, -10.0, 5.0)), ((-12.0, -13.0, 5.0), (-12.0, -7.0, 5.0))),
        ellipsoid_lps_mm=((-16.0, -10, 5), (-8.0, -10, 5), (-12, -13, 5), (-12, -7, 5), (-12, -10, 3), (-12, -10, 7)),
    )
    return [big, small]


#: The prior exam as the job store keeps it (rows by name); lesion 1 there is track 3.
PRIOR_ROWS = [
    ("20231102", {"whole_tumor": 9.0, "enhancing": 2.5, "necrotic": 0.5, "edema": 6.0, "rano_sum_of_products": 400.0,
                  "lesion_1_offset_x": 10.0, "lesion_1_offset_y": -28.0, "lesion_1_offset_z": 9.0,
                  "lesion_1_rano_product": 400.0, "lesion_1_track": 3.0}),
]


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    tmp = tmp_path_factory.mktemp("lesions")
    series = make_series("les")
    for ds in series:  # the patient module as a scanner fills it
        ds.PatientAge = "054Y"
        ds.PatientWeight = 71.5
        ds.PatientSize = 1.68
    paths = write_series(series, tmp / "src")
    result = AnalyzerResult(
        label_maps=[LabelMap("glioma", make_label_map(), "t1c", SEGMENTS)],
        measurements=[
            Measurement("whole_tumor", 6.8, "mL", ("118565006", "SCT", "Volume"), "Whole tumor"),
            Measurement("enhancing", 1.8, "mL", ("118565006", "SCT", "Volume"), "Enhancing tumour"),
            Measurement("rano_sum_of_products", 200.0, "mm2", None, None),
        ],
        extra={"lesions": _lesions()},
    )
    new_rows = annotate(result, PRIOR_ROWS, "patient-key-1", "glioma")
    written = write_results(
        job_id="job-lesions",
        result=result,
        model=MODEL,
        out_dir=tmp / "out",
        application="Glioma",
        source_series={"t1c": paths},
        branding=ReportBranding(institution_name="Example Hospital"),
        prior_results=PRIOR_ROWS,
        trend_keys=["whole_tumor", "enhancing"],
    )
    return result, new_rows, written, paths


def test_follow_up_against_the_prior(report) -> None:  # type: ignore[no-untyped-def]
    result, rows, _, _ = report
    fu = result.extra["follow_up"]
    # Lesion 1 (measurable, 16 × 12.5 = 200 mm²) matches the prior's track 3; lesion 2 is new but not measurable.
    assert fu.tracks == {1: 3, 2: 4} and fu.new_lesions == (2,)
    assert fu.current_sum_mm2 == pytest.approx(200.0)
    assert fu.change_vs_prior_pct == pytest.approx(-50.0)
    assert fu.category is RanoCategory.PR
    names = {m.name: m for m in rows}
    assert names["rano_category"].code == ("PR", LOCAL_SCHEME, "partial response")
    assert names["lesion_1_track"].value == 3 and names["lesion_2_track"].value == 4


def _items(seq):  # type: ignore[no-untyped-def]
    for item in seq:
        yield item
        if "ContentSequence" in item:
            yield from _items(item.ContentSequence)


def _name(item) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    c = item.ConceptNameCodeSequence[0]
    return str(c.CodeValue), str(c.CodingSchemeDesignator)


def _groups(ds):  # type: ignore[no-untyped-def]
    root = ds.ContentSequence
    imaging = next(i for i in root if _name(i) == ("126010", "DCM"))  # Imaging Measurements
    return [g for g in imaging.ContentSequence if _name(g) == ("125007", "DCM")]  # Measurement Group


def _tracking(group) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    ident = next(i for i in group.ContentSequence if _name(i) == ("112039", "DCM"))
    uid = next(i for i in group.ContentSequence if _name(i) == ("112040", "DCM"))
    return str(ident.TextValue), str(uid.UID)


def _measurements(group) -> dict[tuple[str, str], tuple[float, str, object]]:  # type: ignore[no-untyped-def]
    out = {}
    for i in group.ContentSequence:
        if i.ValueType == "NUM":
            mv = i.MeasuredValueSequence[0]
            unit = mv.MeasurementUnitsCodeSequence[0]
            coords = [c for c in i.get("ContentSequence", []) if c.ValueType == "SCOORD3D"]
            out[_name(i)] = (float(mv.NumericValue), f"{unit.CodeValue}|{unit.CodingSchemeDesignator}",
                             np.asarray(coords[0].GraphicData, dtype=float).reshape(-1, 3) if coords else None)
    return out


def test_the_sr_reads_back_to_the_jobs_measurements(report) -> None:  # type: ignore[no-untyped-def]
    result, _, written, _ = report
    ds = pydicom.dcmread(written.paths["sr"])
    groups = _groups(ds)
    by_id = {_tracking(g)[0]: g for g in groups}
    # One group per segment, the whole-tumour union, each lesion (by track) and the RANO group.
    assert {s.name for s in SEGMENTS} | {"Whole tumor", "Lesion 3", "Lesion 4", "RANO sum of products"} == set(by_id)
    from radnode.analyzers.glioma.followup import tracking_uid

    for les in result.extra["lesions"]:
        track, uid = result.extra["tracking"][les.index]
        g = by_id[f"Lesion {track}"]
        assert _tracking(g)[1] == uid == tracking_uid("patient-key-1", "glioma", track)
        m = _measurements(g)
        bi = les.bidimensional
        assert m[("118565006", "SCT")][:2] == (pytest.approx(les.volumes_ml["whole_tumor"]), "ml|UCUM")
        assert m[("81827009", "SCT")][:2] == (pytest.approx(les.max_axial_diameter_mm), "mm|UCUM")
        assert m[("103339001", "SCT")][:2] == (pytest.approx(bi.longest_mm), "mm|UCUM")
        assert m[("131189007", "SCT")][:2] == (pytest.approx(bi.perpendicular_mm), "mm|UCUM")
        site = next(i for i in g.ContentSequence if _name(i) == ("363698007", "SCT"))
        lobe = {"frontal": "83251001", "parietal": "16630005"}[les.region]
        assert site.ConceptCodeSequence[0].CodeValue == lobe
        side = next(i for i in site.ContentSequence if _name(i) == ("272741003", "SCT"))
        assert side.ConceptCodeSequence[0].CodeValue == {"left": "7771000", "right": "24028007"}[les.hemisphere]
        finding = next(i for i in g.ContentSequence if _name(i) == ("121071", "DCM"))
        assert finding.ConceptCodeSequence[0].CodeValue == "108369006"
        surface = [i for i in _items(g.ContentSequence) if i.ValueType == "SCOORD3D" and i.GraphicType == "ELLIPSOID"]
        assert len(surface) == 1 and np.allclose(np.asarray(surface[0].GraphicData).reshape(-1, 3), les.ellipsoid_lps_mm)
    # Every region volume the job measured is in its region's group, with its code and unit.
    regions = [m for m in result.measurements if m.unit == "mL" and m.segment and not m.segment.startswith("Lesion ")]
    assert {m.segment for m in regions} >= {"Whole tumor", "Enhancing tumour"}
    for m in regions:
        got = _measurements(by_id[m.segment])
        assert got[("118565006", "SCT")][:2] == (pytest.approx(m.value), "ml|UCUM"), m.segment
    for s in SEGMENTS:  # segment groups reference their segment and name a finding site
        g = by_id[s.name]
        assert any(_name(i) == ("363698007", "SCT") for i in g.ContentSequence)
    fu = result.extra["follow_up"]
    rano = _measurements(by_id["RANO sum of products"])
    # The sum of products in standard codes: SCT Area, derivation SCT Total, method NCIt RANO.
    spd = next(i for i in by_id["RANO sum of products"].ContentSequence if _name(i) == ("42798000", "SCT"))
    assert float(spd.MeasuredValueSequence[0].NumericValue) == pytest.approx(fu.current_sum_mm2, abs=0.05)
    assert spd.MeasuredValueSequence[0].MeasurementUnitsCodeSequence[0].CodeValue == "mm2"
    modifiers = {_name(i): (i.ConceptCodeSequence[0].CodeValue, i.ConceptCodeSequence[0].CodingSchemeDesignator)
                 for i in spd.get("ContentSequence", [])}
    assert modifiers[("121401", "DCM")] == ("255619001", "SCT")  # Derivation: Total
    assert modifiers[("370129005", "SCT")] == ("C114879", "NCIt")  # Measurement Method: RANO
    assert rano[("125314", "DCM")][:2] == (pytest.approx(fu.change_vs_prior_pct), "%|UCUM")
    category = next(i for i in by_id["RANO sum of products"].ContentSequence if _name(i) == ("112048", "DCM"))
    assert (category.ConceptCodeSequence[0].CodeValue, category.ConceptCodeSequence[0].CodingSchemeDesignator) == ("112042", "DCM")
    # Study level holds only the RANO group: no value without a named subject.
    assert all(_tracking(g)[0] != "Study" for g in groups)
    # Standard codes only: no private scheme used, none declared.
    assert "CodingSchemeIdentificationSequence" not in ds
    for item in _items(ds.ContentSequence):
        for seq in ("ConceptNameCodeSequence", "ConceptCodeSequence"):
            for code in item.get(seq, []):
                assert not str(code.CodingSchemeDesignator).startswith("99"), (code.CodeValue, code.CodingSchemeDesignator)


def test_every_object_passes_dciodvfy_without_warnings(report) -> None:  # type: ignore[no-untyped-def]
    _require("dciodvfy")
    _, _, written, _ = report
    for path in written.dicom_files():
        errors, warnings = dciodvfy_report(path)
        assert errors == [] and warnings == [], f"{path.name}: {errors + warnings}"


def test_results_carry_the_sources_patient_module(report) -> None:  # type: ignore[no-untyped-def]
    _require("dcentvfy")
    _, _, written, sources = report
    for path in written.dicom_files():
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        assert (ds.PatientAge, float(ds.PatientWeight), float(ds.PatientSize), ds.PatientSex) == ("054Y", 71.5, 1.68, "F"), path.name
        if "Laterality" in ds:
            assert ds.Laterality in ("R", "L"), path.name
    problems = dcentvfy([*sources, *written.dicom_files()])
    assert [p for p in problems if "patient" in p.lower() or "Patient" in p] == []


def test_the_pdf_shows_lesions_and_the_follow_up(report) -> None:  # type: ignore[no-untyped-def]
    _require("pdftotext")
    _, _, written, _ = report
    text = subprocess.run(["pdftotext", "-layout", str(written.paths["pdf"]), "-"], capture_output=True, text=True, check=True).stdout
    assert "Lesions and RANO measurements" in text
    assert "16.0 × 12.5" in text and "1 (track 3)" in text and "left frontal" in text
    assert "PR (partial response)" in text and "-50.0 %" in text
    assert "2023-11-02" in text and "20231102" not in text  # one date format
    assert "not a response assessment" in text
    assert "Age" in text and "54 years" in text and "71.5 kg" in text
    # Sub-region rows compare with the prior (by row name), not "—".
    line = next(t for t in text.splitlines() if t.strip().startswith("Enhancing tumour"))
    assert "2.50" in line
    # The RANO key image was rendered (also sent as secondary capture).
    titles = [str(pydicom.dcmread(p, stop_before_pixels=True).ImageComments) for p in written.paths["secondary_captures"]]
    assert any("Lesion 1 RANO: 16.0 x 12.5 mm" in t for t in titles)
