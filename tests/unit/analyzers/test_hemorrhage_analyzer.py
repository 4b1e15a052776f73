"""The hemorrhage analyzer on a synthetic head CT with a real ONNX model (no mocks of the runtime).

The model is the oracle of ``tests.support.hemorrhage_oracle``: it labels acute
blood (55–91 HU) intraparenchymal haemorrhage, deterministically, through the
same manifest, sha256 check, onnxruntime session and batching a trained model
goes through. The phantom (``tests.support.ct_phantom``) holds a 70 HU sphere of
radius 14 mm, so the volume, the slices it lies on and its diameters are
known; the same head without the sphere is the negative study, and with an 18°
gantry tilt it is the same blood on sheared slices.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
import yaml

from radnode.analyzers.base import AnalyzerInputs, InputError, SeriesInput
from radnode.analyzers.hemorrhage.analyzer import HemorrhageAnalyzer, HemorrhageOptions
from radnode.analyzers.hemorrhage.inference import context_batches, neighbour_indices
from radnode.analyzers.hemorrhage.measure import abc2, kothari_weight
from radnode.analyzers.hemorrhage.subtypes import SUBTYPES
from radnode.analyzers.runtime import CPU_PROVIDER, ModelError, ModelStore, SessionCache, load, read_manifest
from radnode.model.delivery import PackagedFinding, ResultPackage
from tests.support.ct_phantom import BLOB, BLOB_R, blob_volume_ml, write_ct_series
from tests.support.hemorrhage_cases import TILT, Case, oracle_analyzer, run_case, section_radius_mm
from tests.support.hemorrhage_oracle import LABELS, oracle_graph, oracle_manifest, write_oracle_model

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def analyzer(tmp_path_factory: pytest.TempPathFactory) -> HemorrhageAnalyzer:
    return oracle_analyzer(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def positive(analyzer: HemorrhageAnalyzer, tmp_path_factory: pytest.TempPathFactory) -> Case:
    return run_case(analyzer, tmp_path_factory.mktemp("positive"))


@pytest.fixture(scope="module")
def negative(analyzer: HemorrhageAnalyzer, tmp_path_factory: pytest.TempPathFactory) -> Case:
    return run_case(analyzer, tmp_path_factory.mktemp("negative"), blob_hu=None, seed=1)


@pytest.fixture(scope="module")
def tilted(analyzer: HemorrhageAnalyzer, tmp_path_factory: pytest.TempPathFactory) -> Case:
    return run_case(analyzer, tmp_path_factory.mktemp("tilted"), tilt_deg=TILT, encoding="iop", seed=2)


# -- the positive study ----------------------------------------------------------------------------------


def test_intraparenchymal_blood_is_present_and_nothing_else(positive: Case) -> None:
    s = positive.summary
    assert s["application"] == "hemorrhage"
    assert s["any"] == {"present": True, "probability": pytest.approx(0.9975, abs=1e-4)}
    assert s["subtypes"]["intraparenchymal"]["present"] is True
    for name in SUBTYPES:
        if name != "intraparenchymal":
            assert s["subtypes"][name] == {"present": False, "probability": pytest.approx(0.0025, abs=1e-4), "volume_ml": 0.0}
    findings = {f.name: f for f in positive.result.findings}
    assert findings["Intracranial hemorrhage"].present and findings["Intracranial hemorrhage"].code == ("1386000", "SCT", "Intracranial hemorrhage")
    assert findings["Intraparenchymal hemorrhage"].code == ("274100004", "SCT", "Cerebral hemorrhage")  # from the manifest
    assert findings["Epidural hemorrhage"].code is None  # no code in the manifest: the report uses a local one
    assert all(f.critical for f in findings.values())
    # A present critical finding sends the results to the rule's notify destinations; absent ones do not.
    package = ResultPackage(job_id="j", application="hemorrhage", study_instance_uid="1.2",
                            findings=tuple(PackagedFinding(f.name, f.present, f.probability, f.detail, f.critical)
                                           for f in positive.result.findings))
    assert package.critical and package.summary().startswith("CRITICAL: Intracranial hemorrhage")
    assert positive.result.flags == []


def test_volume_matches_the_blob_and_abc2_is_what_kothari_gives(positive: Case) -> None:
    truth = blob_volume_ml()
    s = positive.summary
    iph = s["subtypes"]["intraparenchymal"]["volume_ml"]
    assert iph == pytest.approx(truth, rel=0.10)
    assert s["volume_ml"] == iph
    # The same label map counted on the source pixels after mapping back agrees.
    assert positive.result.extra["volumes_source_ml"]["Intraparenchymal hemorrhage"] == pytest.approx(iph, rel=0.03)
    est = s["abc2"]
    widest = 2 * max(section_radius_mm(positive.series, k) for k in range(len(positive.series.slices)))
    assert est["subtype"] == "intraparenchymal"
    assert est["a_mm"] == pytest.approx(widest, abs=3.0) and est["b_mm"] == pytest.approx(widest, abs=3.0)
    assert est["b_mm"] <= est["a_mm"]
    # 5 mm slices through a 28 mm sphere: sections at 2.5, 7.5, 12.5 mm from its centre have 97 %, 71 %, 20 %
    # of the largest area, so Kothari counts 1 + 1 + 0.5 + 0.5 slices: C = 15 mm.
    assert est["slices_counted"] == 3.0 and est["c_mm"] == 15.0
    assert est["volume_ml"] == pytest.approx(est["a_mm"] * est["b_mm"] * est["c_mm"] / 2000.0, rel=0.01)
    assert 0.4 * truth < est["volume_ml"] < 1.2 * truth  # ABC/2 weighted by Kothari: about 2/3 of a sphere
    rows = {m.name: m for m in positive.result.measurements}
    assert rows["abc2_volume"].value == est["volume_ml"] and rows["abc2_volume"].method is not None
    assert rows["intraparenchymal_volume"].value == iph and rows["hemorrhage_volume"].value == s["volume_ml"]


def test_slice_probabilities_are_high_exactly_on_the_blob(positive: Case) -> None:
    slices = positive.summary["slices"]
    written = positive.series.slices  # position order, as the analysis reports them
    assert [r["sop_instance_uid"] for r in slices] == [w.sop_instance_uid for w in written]
    assert [r["instance_number"] for r in slices] == [w.instance_number for w in written]
    assert {r["sop_instance_uid"] for r in slices} == {str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID)
                                                       for f in positive.series.files}
    for k, row in enumerate(slices):
        r = section_radius_mm(positive.series, k)
        p = row["probabilities"]
        if r >= 4.0:
            assert p["any"] > 0.99 and p["intraparenchymal"] > 0.99, (k, r)
        elif r == 0.0:
            assert p["any"] < 0.01 and p["intraparenchymal"] < 0.01, (k, r)
        assert all(p[name] < 0.01 for name in SUBTYPES if name != "intraparenchymal")
    # The evidence is the slices at or above the threshold, as image references.
    flagged = [r["sop_instance_uid"] for r in slices if r["probabilities"]["any"] >= 0.5]
    any_finding = next(f for f in positive.result.findings if f.name == "Intracranial hemorrhage")
    assert [e.sop_instance_uid for e in any_finding.evidence] == flagged and len(flagged) == 6


def test_label_map_lies_on_the_source_slices(positive: Case) -> None:
    [lm] = positive.result.label_maps
    assert lm.reference_role == "ct_brain" and lm.array.shape == (30, 100, 100)
    assert [s.name for s in lm.segments] == ["Intraparenchymal hemorrhage"] and lm.segments[0].value == 3
    assert set(np.unique(lm.array)) == {0, 3}
    # Every labelled source pixel is inside the sphere (within a source pixel of its surface).
    for k in np.unique(np.nonzero(lm.array)[0]):
        pts = positive.series.pixel_points(int(k))[lm.array[k] == 3]
        assert np.linalg.norm(pts - BLOB, axis=-1).max() < BLOB_R + 2.0
    assert len(lm.source_files) == 30
    keys = positive.result.extra["key_slices"]
    assert len(keys) == 1 and keys[0].segment == "Intraparenchymal hemorrhage" and np.any(lm.array[keys[0].index] == 3)


# -- negative, tilted ---------------------------------------------------------------------------------------


def test_a_head_without_blood_is_negative(negative: Case) -> None:
    s = negative.summary
    assert s["any"]["present"] is False and s["any"]["probability"] < 0.01
    assert all(not v["present"] and v["volume_ml"] == 0.0 for v in s["subtypes"].values())
    assert s["volume_ml"] == 0.0 and s["abc2"] is None
    [lm] = negative.result.label_maps
    assert lm.segments == () and not lm.array.any()
    assert not any(f.present for f in negative.result.findings) and all(not f.evidence for f in negative.result.findings)
    assert [m.name for m in negative.result.measurements] == ["hemorrhage_volume"]


def test_a_tilted_gantry_gives_the_same_volume(positive: Case, tilted: Case) -> None:
    s, ref = tilted.summary, positive.summary
    assert s["any"]["present"] and s["subtypes"]["intraparenchymal"]["present"]
    assert s["volume_ml"] == pytest.approx(ref["volume_ml"], rel=0.05)
    assert s["volume_ml"] == pytest.approx(blob_volume_ml(), rel=0.10)
    assert tilted.result.extra["volumes_source_ml"]["Intraparenchymal hemorrhage"] == pytest.approx(s["volume_ml"], rel=0.03)
    assert [r["sop_instance_uid"] for r in s["slices"]] == [w.sop_instance_uid for w in tilted.series.slices]
    for k, row in enumerate(s["slices"]):
        r = section_radius_mm(tilted.series, k)
        if r >= 4.0:
            assert row["probabilities"]["any"] > 0.99, k
        elif r == 0.0:
            assert row["probabilities"]["any"] < 0.01, k


# -- bad input, broken models ----------------------------------------------------------------------------------


def _inputs(files: list[Path]) -> AnalyzerInputs:
    return AnalyzerInputs("1.2", {"ct_brain": SeriesInput("ct_brain", "1.3", tuple(files))}, HemorrhageOptions(), "bad")


def test_bad_input_is_an_input_error_naming_the_problem(analyzer: HemorrhageAnalyzer, tmp_path: Path) -> None:
    few = write_ct_series(tmp_path / "few", n=4, rows=64, cols=64, spacing=3.2, blob_hu=None)
    with pytest.raises(InputError, match=r"has 4 slices; haemorrhage detection needs at least 5"):
        analyzer.run(_inputs(few.files), tmp_path / "w1", lambda s: None)
    # Not CT: the same files as another modality's SOP class.
    mr = tmp_path / "mr"
    mr.mkdir()
    for f in few.files:
        ds = pydicom.dcmread(f)
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.4"
        ds.Modality = "MR"
        ds.save_as(mr / f.name)
    with pytest.raises(InputError, match=r"usable CT slices.*not a CT image"):
        analyzer.run(_inputs(sorted(mr.glob("*.dcm"))), tmp_path / "w2", lambda s: None)
    # No skull: bone replaced by soft tissue.
    soft = tmp_path / "soft"
    soft.mkdir()
    head = write_ct_series(tmp_path / "head", n=8, rows=64, cols=64, spacing=3.2, blob_hu=None)
    for f in head.files:
        ds = pydicom.dcmread(f)
        px = ds.pixel_array.copy()
        px[px > 1024 + 100] = 1024 + 40
        ds.PixelData = px.astype(np.int16).tobytes()
        ds.save_as(soft / f.name)
    with pytest.raises(InputError, match="no soft tissue enclosed by bone"):
        analyzer.run(_inputs(sorted(soft.glob("*.dcm"))), tmp_path / "w3", lambda s: None)


def test_a_broken_model_file_is_a_model_error(tmp_path: Path) -> None:
    good = oracle_graph()
    folder = write_oracle_model(tmp_path / "m" / "hemorrhage-oracle", data=good)
    (folder / "model.onnx").write_bytes(good[: len(good) // 2])  # truncated copy; the manifest pins the good bytes
    broken = HemorrhageAnalyzer(ModelStore([tmp_path / "m"], builtin_dir=None), SessionCache([CPU_PROVIDER]))
    with pytest.raises(ModelError, match="sha256 mismatch"):
        broken.run(_inputs([]), tmp_path / "w", lambda s: None)
    # The bytes pinned but not a network: refused at load, before any preprocessing.
    write_oracle_model(tmp_path / "n" / "hemorrhage-oracle", data=b"not an onnx file" * 8)
    garbage = HemorrhageAnalyzer(ModelStore([tmp_path / "n"], builtin_dir=None), SessionCache([CPU_PROVIDER]))
    with pytest.raises(ModelError, match="is not a valid ONNX file"):
        garbage.run(_inputs([]), tmp_path / "w", lambda s: None)


def test_no_model_installed_fails_the_job_not_the_node(tmp_path: Path) -> None:
    bare = HemorrhageAnalyzer(ModelStore([tmp_path / "none"], builtin_dir=None), SessionCache([CPU_PROVIDER]))
    assert bare.spec.model is None and bare.spec.required_roles == ("ct_brain",)
    with pytest.raises(ModelError, match=r"no usable model with application 'hemorrhage'"):
        bare.run(_inputs([]), tmp_path / "w", lambda s: None)


def test_a_model_against_another_contract_is_refused_at_load(tmp_path: Path) -> None:
    # Five context slices in the graph, one in the manifest.
    folder = write_oracle_model(tmp_path / "m" / "x", data=oracle_graph(context=2))
    ref = ModelStore([tmp_path / "m"], builtin_dir=None).find(application="hemorrhage")
    with pytest.raises(ModelError, match=r"expects 15 input channels but the manifest implies 9 \(3 windows x 3 slices\)"):
        load(ref, providers=[CPU_PROVIDER])
    # A grid size the graph does not take.
    write_oracle_model(folder, size=256, ct={**oracle_manifest(b"")["ct"], "in_plane_size": 128})
    ref = ModelStore([tmp_path / "m"], builtin_dir=None).find(application="hemorrhage")
    with pytest.raises(ModelError, match="ct.in_plane_size is 128"):
        load(ref, providers=[CPU_PROVIDER])


# -- the manifest schema ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"ct": None}, "ct: required for slice-classification-segmentation models"),
        ({"ct": {"colour": "red"}}, "unknown key 'ct.colour' (allowed keys: in_plane_mm, in_plane_size, context_slices"),
        ({"ct": {"thresholds": {"any": 0.5}}}, "thresholds: one per slice output (missing for epidural"),
        ({"ct": {"thresholds": {**{k: 0.5 for k in ("any", *SUBTYPES)}, "edh": 0.5}}}, "unknown outputs edh"),
        ({"ct": {"thresholds": {k: 1.0 for k in ("any", *SUBTYPES)}}}, "strictly between 0 and 1"),
        ({"ct": {"windows": [[40, 0]]}}, "window 0 must be (centre, width) in HU with a positive width"),
        ({"ct": {"slice_outputs": ["any", "any"]}}, "per-slice output names must be unique (repeated: any)"),
        ({"ct": {"in_plane_mm": 0}}, "ct.in_plane_mm: Input should be greater than 0"),
        ({"spacing_mm": [1, 1, 5]}, "spacing_mm/patch_size: not used by slice-classification-segmentation models"),
        ({"normalization": "zscore-brain"}, "normalization: a slice-classification-segmentation model takes ct-windows"),
        ({"task": "classification"}, "ct: only read for task slice-classification-segmentation"),
    ],
)
def test_the_ct_block_is_checked_with_clear_errors(tmp_path: Path, change: dict[str, Any], expected: str) -> None:
    manifest = oracle_manifest(b"x")
    for key, value in change.items():
        if key == "ct" and isinstance(value, dict):
            manifest["ct"] = {**manifest["ct"], **value}
        elif value is None:
            manifest.pop(key)
        else:
            manifest[key] = value
    (tmp_path / "manifest.yaml").write_text(yaml.safe_dump(manifest))
    with pytest.raises(ModelError) as err:
        read_manifest(tmp_path)
    assert expected in str(err.value)


def test_the_contract_manifest_reads(tmp_path: Path) -> None:
    (tmp_path / "manifest.yaml").write_text(yaml.safe_dump(oracle_manifest(b"x")))
    m = read_manifest(tmp_path)
    assert m.task == "slice-classification-segmentation" and m.ct is not None
    assert m.ct.windows == [(40.0, 80.0), (80.0, 200.0), (600.0, 2800.0)] and m.ct.channels_per_slice == 9
    assert m.input_channels == 9 and [label.value for label in m.labels] == [label["value"] for label in LABELS]


# -- pieces ----------------------------------------------------------------------------------------------------


def test_neighbours_are_offset_major_and_edges_repeat() -> None:
    assert neighbour_indices(5, 0, 1) == [0, 0, 1] and neighbour_indices(5, 4, 1) == [3, 4, 4]
    assert neighbour_indices(5, 2, 2) == [0, 1, 2, 3, 4] and neighbour_indices(1, 0, 1) == [0, 0, 0]
    windows = np.arange(4 * 3, dtype=np.float32).reshape(4, 3, 1, 1) * np.ones((1, 1, 2, 2), np.float32)
    batches = list(context_batches(windows, 1, 3))
    assert [first for first, _ in batches] == [0, 3] and batches[0][1].shape == (3, 9, 2, 2)
    # slice 1: offsets −1, 0, +1 → slices 0, 1, 2, each brain, subdural, bone
    np.testing.assert_array_equal(batches[0][1][1, :, 0, 0], np.concatenate([windows[0, :, 0, 0], windows[1, :, 0, 0], windows[2, :, 0, 0]]))
    np.testing.assert_array_equal(batches[1][1][0, :, 0, 0], np.concatenate([windows[2, :, 0, 0], windows[3, :, 0, 0], windows[3, :, 0, 0]]))


def test_abc2_of_a_cylinder_is_exact() -> None:
    """A disc of radius 10 mm, 20 mm high on 1 mm pixels and 5 mm slices: A = B = 20, C = 20, ABC/2 = 4 mL."""
    yy, xx = np.mgrid[0:60, 0:60]
    disc = (yy - 29.5) ** 2 + (xx - 29.5) ** 2 <= 10.0**2
    region = np.zeros((8, 60, 60), bool)
    region[2:6] = disc
    est = abc2(region, (5.0, 1.0, 1.0))
    assert est is not None
    assert est.a_mm == pytest.approx(20.0, abs=1.0) and est.b_mm == pytest.approx(20.0, abs=1.0)
    assert est.c_mm == 20.0 and est.slice_weights == {2: 1.0, 3: 1.0, 4: 1.0, 5: 1.0}
    assert est.volume_ml == pytest.approx(4.0, rel=0.1)
    assert abc2(np.zeros((3, 4, 4), bool), (5.0, 1.0, 1.0)) is None
    assert [kothari_weight(a, 100.0) for a in (100, 75, 74.9, 25, 24.9, 0)] == [1.0, 1.0, 0.5, 0.5, 0.0, 0.0]
    # An ellipse 30 x 12 mm: B is the longest chord perpendicular to A, not the bounding box.
    ell = ((yy - 29.5) / 6.0) ** 2 + ((xx - 29.5) / 15.0) ** 2 <= 1.0
    est = abc2(ell[None], (5.0, 1.0, 1.0))
    assert est is not None and est.a_mm == pytest.approx(30.0, abs=1.0) and est.b_mm == pytest.approx(12.0, abs=1.0)
    assert math.isclose(est.c_mm, 5.0)


# -- routing ------------------------------------------------------------------------------------------------------


def test_the_shipped_head_ct_rules_route_to_the_installed_analyzer(positive: Case, tmp_path: Path) -> None:
    """config/routing.yaml's head-ct-hemorrhage rule and the built-in default plan a runnable hemorrhage job."""
    from radnode.analyzers.registry import Registry
    from radnode.routing.router import Router
    from radnode.routing.rules import load_rules
    from radnode.routing.setup import DEFAULT_RULES, load_classifier
    from radnode.settings import Settings

    settings = Settings(data_dir=tmp_path / "data", analyzers={"model_dirs": [str(tmp_path / "models")],
                                                                "providers": [CPU_PROVIDER]})
    # A site's model with a version above the shipped demo's is the one a job takes.
    write_oracle_model(tmp_path / "models" / "hemorrhage-oracle", version="9.0.0")
    registry = Registry.from_settings(settings)
    classifier = load_classifier(settings)
    study = positive.series.files[0].parent
    series_uid = str(pydicom.dcmread(positive.series.files[0], stop_before_pixels=True).SeriesInstanceUID)
    repo = Path(__file__).resolve().parents[3]
    for rules in (repo / "config" / "routing.yaml", DEFAULT_RULES):
        config = load_rules(rules, registry.declared_applications())
        router = Router(settings, sessions=None, rules=lambda: config, classifier=classifier, registry=registry)  # type: ignore[arg-type]
        plan = router.plan(study, calling_ae="", called_ae=settings.ae_title, trigger=None)
        [app] = plan.applications
        assert app.application.name == "hemorrhage", rules
        assert app.request.error is None and app.request.needs_input is None, rules
        assert app.selection.chosen["ct_brain"].series_instance_uid == series_uid
        assert app.model_version == "0.1.0+hemorrhage-oracle-9.0.0"
        if rules.name == "routing.yaml":  # critical results also go to the stroke team
            assert [d.name for d in app.request.destinations if d.notify] == ["stroke_pager", "stroke_chat"]


# -- reading rules a manifest can ask for ------------------------------------------------------------------


def test_minor_labels_of_one_bleed_take_its_majority_and_separate_bleeds_keep_theirs() -> None:
    from radnode.analyzers.hemorrhage.inference import merge_minor_labels

    labels = np.zeros((3, 20, 20), dtype=np.uint8)
    labels[:, 2:8, 2:8] = 3          # a haematoma, 108 voxels
    labels[1, 2:8, 8] = 2            # a 6-voxel "subdural" fringe touching it (5 %)
    labels[:, 14:18, 14:18] = 2      # a separate subdural bleed, 48 voxels
    labels[1, 14, 14] = 1            # a 1-voxel "epidural" inside it (2 %)
    merged = merge_minor_labels(labels, 0.1)
    assert (merged[1, 2:8, 8] == 3).all()
    assert (merged[:, 14:18, 14:18] == 2).all()
    assert (merged[:, 2:8, 2:8] == 3).all()
    assert np.array_equal(merge_minor_labels(labels, 0.0), labels)
    # Above the share a second label stays: 6 of 114 voxels is 5 %, kept at a share of 0.05.
    assert (merge_minor_labels(labels, 0.05)[1, 2:8, 8] == 2).all()


def test_merge_minor_labels_is_validated_in_the_manifest(tmp_path: Path) -> None:
    data = oracle_graph(context=1, size=64)
    for bad in (-0.1, 0.5, "lots"):
        m = oracle_manifest(data, size=64)
        m["ct"]["merge_minor_labels"] = bad
        (tmp_path / "manifest.yaml").write_text(yaml.safe_dump(m))
        with pytest.raises(ModelError, match="merge_minor_labels"):
            read_manifest(tmp_path)


def test_no_subtype_is_reported_without_any(tmp_path: Path) -> None:
    """The oracle's "any" and intraparenchymal answers are equal; an "any" threshold above them and a low
    intraparenchymal one would otherwise report a subtype in a study reported as without haemorrhage."""
    folder = tmp_path / "models" / "hemorrhage-oracle"
    write_oracle_model(folder)
    m = yaml.safe_load((folder / "manifest.yaml").read_text())
    m["ct"]["thresholds"] = {**m["ct"]["thresholds"], "any": 0.9999, "intraparenchymal": 0.05}
    (folder / "manifest.yaml").write_text(yaml.safe_dump(m, sort_keys=False))
    strict = HemorrhageAnalyzer(ModelStore([tmp_path / "models"], builtin_dir=None), SessionCache([CPU_PROVIDER]))
    case = run_case(strict, tmp_path / "case", seed=1)
    s = case.summary
    assert s["subtypes"]["intraparenchymal"]["probability"] >= 0.05  # the subtype alone would have been present
    assert s["any"]["present"] is False
    assert not any(v["present"] for v in s["subtypes"].values()) and s["volume_ml"] == 0.0
    assert not any(f.present for f in case.result.findings)


def test_a_slice_probability_takes_a_share_of_its_higher_neighbour() -> None:
    from radnode.analyzers.hemorrhage.inference import with_neighbours

    column = np.array([0.0, 0.9, 0.0, 0.0, 0.2], dtype=np.float32)
    assert np.allclose(with_neighbours(column, 0.5), [0.45, 0.9, 0.45, 0.1, 0.2])
    assert np.array_equal(with_neighbours(column, 0.0), column)
    assert np.array_equal(with_neighbours(column[:1], 0.5), column[:1])


def test_soft_area_ranks_a_half_seen_slice_above_a_clean_one_and_leaves_subtypes_to_the_map() -> None:
    from radnode.analyzers.hemorrhage.inference import area_probability, bleed_area, read_inside

    logits = np.random.default_rng(3).normal(size=(2, 6, 4, 4)).astype(np.float32)
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    assert np.allclose(bleed_area(logits, 0), (1.0 - p[:, 0]).sum(axis=(1, 2)), atol=1e-5)
    inside = np.zeros((2, 4, 4), dtype=bool)
    inside[:, 1:3, 1:3] = True
    assert np.allclose(bleed_area(logits, 0, inside), ((1.0 - p[:, 0]) * inside).sum(axis=(1, 2)), atol=1e-5)

    labels = np.zeros((3, 8, 8), dtype=np.uint8)
    labels[1, 2:5, 2:5] = 3                       # 9 intraparenchymal pixels on the middle slice
    mask = np.ones_like(labels, dtype=bool)
    area = np.array([0.0, 9.0, 2.5])              # the last slice: no arg-max pixel, but 2.5 expected ones
    outputs = [None, 1, 2, 3, 4, 5]
    _, by_count = read_inside(labels, mask, 0.0, outputs)
    _, by_area = read_inside(labels, mask, 0.0, outputs, any_area=area)
    assert by_count[0, 0] == by_count[2, 0]       # level by the pixel count
    assert by_area[2, 0] > by_area[0, 0]          # ranked by the expected area
    assert np.isclose(by_area[2, 0], area_probability(np.array([2.5]))[0])
    assert np.array_equal(by_area[:, 1:], by_count[:, 1:])  # subtypes still from the map


@pytest.mark.parametrize(("ct", "message"), [
    ({"any_probability": "soft-area"}, "set slice_probability: masked-segmentation"),
    ({"slice_probability": "masked-segmentation", "neighbour_share": 0.5}, "must stay below the 'any' threshold"),
    ({"slice_probability": "masked-segmentation", "neighbour_share": 1.0}, "neighbour_share"),
    ({"min_subtype_volume_ml": -1}, "min_subtype_volume_ml"),
    ({"any_probability": "mean"}, "any_probability"),
])
def test_reading_rules_are_validated_in_the_manifest(tmp_path: Path, ct: dict, message: str) -> None:
    data = oracle_graph(context=1, size=64)
    m = oracle_manifest(data, size=64)
    m["ct"].update(ct)   # the oracle's "any" threshold is 0.5
    (tmp_path / "manifest.yaml").write_text(yaml.safe_dump(m))
    with pytest.raises(ModelError, match=message):
        read_manifest(tmp_path)


def _oracle_with(tmp_path: Path, data: bytes | None = None, **ct: object) -> HemorrhageAnalyzer:
    folder = tmp_path / "models" / "hemorrhage-oracle"
    write_oracle_model(folder, data=data)
    m = yaml.safe_load((folder / "manifest.yaml").read_text())
    m["ct"].update(ct)
    (folder / "manifest.yaml").write_text(yaml.safe_dump(m, sort_keys=False))
    return HemorrhageAnalyzer(ModelStore([tmp_path / "models"], builtin_dir=None), SessionCache([CPU_PROVIDER]))


def test_a_subtype_under_the_reporting_volume_is_not_reported_but_any_stays(positive: Case, tmp_path: Path) -> None:
    truth_ml = positive.summary["subtypes"]["intraparenchymal"]["volume_ml"]
    strict = _oracle_with(tmp_path, min_subtype_volume_ml=round(truth_ml * 2, 1))
    case = run_case(strict, tmp_path / "case")
    s = case.summary
    assert s["any"]["present"] is True                       # the triage answer does not depend on it
    assert s["subtypes"]["intraparenchymal"]["probability"] == positive.summary["subtypes"]["intraparenchymal"]["probability"]
    assert s["subtypes"]["intraparenchymal"]["present"] is False and s["volume_ml"] == 0.0
    assert any("under the model's reporting volume" in f for f in case.result.flags)
    [lm] = case.result.label_maps
    assert not lm.array.any() and not lm.segments
    # Under the volume of the bleed nothing changes.
    loose = _oracle_with(tmp_path / "loose", min_subtype_volume_ml=round(truth_ml / 2, 1))
    assert run_case(loose, tmp_path / "loose_case").summary["subtypes"]["intraparenchymal"]["present"] is True


def test_soft_any_with_neighbours_through_the_analyzer(positive: Case, tmp_path: Path) -> None:
    """The manifest's reading reaches the analyzer: "any" from the soft area inside the intracranial mask,
    the blob's neighbouring slices raised to a share of it, the study answer and its evidence unchanged."""
    soft = _oracle_with(tmp_path, data=oracle_graph(logit=12.0), slice_probability="masked-segmentation",
                        any_probability="soft-area", neighbour_share=0.4)
    s = run_case(soft, tmp_path / "case").summary
    assert s["any"]["present"] is True and s["subtypes"]["intraparenchymal"]["present"] is True
    anyp = np.array([row["probabilities"]["any"] for row in s["slices"]])
    ref = np.array([row["probabilities"]["any"] for row in positive.summary["slices"]])
    top = int(np.argmax(anyp))
    assert anyp[top] > 0.9
    blob = np.flatnonzero(ref >= 0.5)
    edge = [k for k in (blob.min() - 1, blob.max() + 1) if 0 <= k < len(anyp)]
    assert edge and all(anyp[k] >= 0.4 * max(anyp[k - 1], anyp[min(k + 1, len(anyp) - 1)]) - 1e-3 for k in edge)
    assert all(anyp[k] < 0.5 for k in edge)                  # a neighbour alone is never evidence
    far = [k for k in range(len(anyp)) if abs(k - blob.min()) > 2 and abs(k - blob.max()) > 2]
    assert far and max(anyp[k] for k in far) < 0.1
