"""Series classifier: training, robustness, persistence, shipped model, scanning and the CLI."""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import structlog
from click.testing import CliRunner
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from radnode.routing.classifier import (
    ClassifierError,
    SeriesClassifier,
    default_model_path,
    load_default,
    meta_path_for,
)
from radnode.commands.classifier import classifier_group, classify_command
from radnode.routing.corpus import LABELS, generate_corpus
from radnode.routing.series_index import SeriesSummary, scan_series
from radnode.training.series import evaluate_holdout


@pytest.fixture(scope="module")
def small_model() -> SeriesClassifier:
    items = generate_corpus(seed=11, studies_per_family=6)
    return SeriesClassifier(rounds=30).fit([i.summary for i in items], [i.label for i in items])


def _write_series(folder: Path, header: Dataset, count: int, study_uid: str, series_uid: str, number: int, suffix: str = ".dcm") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(count):
        ds = Dataset()
        ds.update(header)
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.SeriesNumber = number
        ds.InstanceNumber = k + 1
        ds.SOPInstanceUID = generate_uid()
        ds.SOPClassUID = header.get("SOPClassUID", "1.2.840.10008.5.1.4.1.1.4")
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.save_as(folder / f"{ds.SOPInstanceUID}{suffix}", enforce_file_format=True)


@pytest.fixture(scope="module")
def dicom_tree(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """A small study on disk: a spool-like layout, a flat folder without extensions and junk files."""
    root = tmp_path_factory.mktemp("dicom")
    items = generate_corpus(seed=5, studies_per_family=1, families=["siemens_syngo"])
    wanted = {"localizer", "t1c", "flair", "t2", "dwi"}
    truth: dict[str, str] = {}
    study = generate_uid()
    # Classic single-frame headers only: the corpus also holds multi-frame ones (one file per series).
    for n, item in enumerate(i for i in items if i.label in wanted and "PerFrameFunctionalGroupsSequence" not in i.summary.header):
        if item.label in truth.values():
            continue
        uid = generate_uid()
        folder = root / "spool" / study / uid if n % 2 else root / "flat"
        _write_series(folder, item.summary.header, 3, study, uid, number=10 - n, suffix=".dcm" if n % 2 else "")
        truth[uid] = item.label
    (root / "flat" / "README").write_text("not dicom")
    (root / "flat" / "garbage.dcm").write_bytes(b"\x00" * 300)
    return root, truth


def test_scan_series_groups_and_sorts(dicom_tree: tuple[Path, dict[str, str]]) -> None:
    root, truth = dicom_tree
    summaries = scan_series(root)
    assert {s.series_instance_uid for s in summaries} == set(truth)
    assert all(s.instance_count == 3 and len(s.paths) == 3 for s in summaries)
    numbers = [s.series_number for s in summaries]
    assert numbers == sorted(numbers)
    assert all("PixelData" not in s.header and s.header.get("InstanceNumber") == 1 for s in summaries)
    assert scan_series(root / "does-not-exist") == []


def test_predictions_are_well_formed_even_for_bad_headers(small_model: SeriesClassifier) -> None:
    bad = Dataset()
    bad.EchoTime = "-3"
    bad.RepetitionTime = "0"
    odd = [
        SeriesSummary.from_header(Dataset(), instance_count=1),
        SeriesSummary.from_header(bad, instance_count=1),
    ]
    predictions = small_model.predict(odd)
    assert len(predictions) == 2
    for p in predictions:
        assert p.label in LABELS
        assert set(p.probabilities) == set(LABELS)
        assert abs(sum(p.probabilities.values()) - 1.0) < 1e-4
        assert p.probability == max(p.probabilities.values())
    assert small_model.predict([]) == []


def test_untrained_classifier_raises() -> None:
    with pytest.raises(ClassifierError):
        SeriesClassifier().predict([SeriesSummary.from_header(Dataset())])


def test_save_load_roundtrip_and_errors(small_model: SeriesClassifier, tmp_path: Path) -> None:
    items = generate_corpus(seed=12, studies_per_family=1)
    path = small_model.save(tmp_path / "m.json")
    meta = json.loads(meta_path_for(path).read_text())
    assert meta["labels"] == list(LABELS) and meta["feature_version"] >= 1 and meta["radnode_version"]
    loaded = SeriesClassifier.load(path)
    a = small_model.predict_proba_matrix(np.vstack([np.zeros(meta["n_features"], dtype=np.float32)]))
    b = loaded.predict_proba_matrix(np.vstack([np.zeros(meta["n_features"], dtype=np.float32)]))
    assert np.allclose(a, b)
    assert [p.label for p in loaded.predict([i.summary for i in items])] == [p.label for p in small_model.predict([i.summary for i in items])]

    with pytest.raises(ClassifierError, match="not found"):
        SeriesClassifier.load(tmp_path / "absent.json")
    corrupt = tmp_path / "corrupt.json"
    corrupt.write_text("{ this is not a model")
    shutil.copy(meta_path_for(path), meta_path_for(corrupt))
    with pytest.raises(ClassifierError, match="corrupt"):
        SeriesClassifier.load(corrupt)
    meta_path_for(corrupt).write_text("[]")
    with pytest.raises(ClassifierError, match="metadata"):
        SeriesClassifier.load(corrupt)
    stale = tmp_path / "stale.json"
    shutil.copy(path, stale)
    meta_path_for(stale).write_text(json.dumps(dict(meta, feature_version=meta["feature_version"] + 99)))
    with pytest.raises(ClassifierError, match="feature layout"):
        SeriesClassifier.load(stale)
    (tmp_path / "nometa.json").write_bytes(path.read_bytes())
    with pytest.raises(ClassifierError, match="metadata not found"):
        SeriesClassifier.load(tmp_path / "nometa.json")


def test_shipped_model_is_small_and_accurate_on_fresh_series() -> None:
    path = default_model_path()
    assert path.stat().st_size < 5_000_000
    clf = load_default()
    meta = clf.meta
    assert meta is not None and meta.accuracy is not None and meta.accuracy >= 0.98
    items = generate_corpus(seed=987, studies_per_family=3)  # a seed the shipped model never saw
    predictions = clf.predict([i.summary for i in items])
    accuracy = np.mean([p.label == i.label for p, i in zip(predictions, items)])
    assert accuracy >= 0.97


def test_holdout_accuracy_does_not_regress() -> None:
    """Families held out of training entirely (small corpus, fewer rounds to stay fast)."""
    report = evaluate_holdout(seed=2, studies_per_family=12, rounds=50)
    assert report.n > 800
    assert report.accuracy >= 0.95, report.format()
    assert sum(map(sum, report.confusion)) == report.n


@pytest.fixture()
def logs_to_stderr() -> Iterator[None]:
    """As radnode's CLI does (logconfig): logs on stderr, so stdout holds only the command's output."""
    saved = structlog.get_config()
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=sys.stderr))
    yield
    structlog.configure(**saved)


def test_classify_cli_json_and_table(dicom_tree: tuple[Path, dict[str, str]], logs_to_stderr: None) -> None:
    root, truth = dicom_tree
    result = CliRunner().invoke(classify_command, [str(root), "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert {r["series_instance_uid"] for r in rows} == set(truth)
    assert set(rows[0]) == {"series_instance_uid", "series_description", "label", "probability"}
    correct = sum(r["label"] == truth[r["series_instance_uid"]] for r in rows)
    assert correct >= len(rows) - 1
    table = CliRunner().invoke(classify_command, [str(root)])
    assert table.exit_code == 0 and "label" in table.output
    missing = CliRunner().invoke(classify_command, [str(root), "--model", str(root / "nope.json")])
    assert missing.exit_code != 0 and "not found" in missing.output


def test_train_cli_on_labelled_folder(dicom_tree: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    root, truth = dicom_tree
    csv_path = tmp_path / "labels.csv"
    csv_path.write_text("series_instance_uid,label\n" + "".join(f"{uid},{label}\n" for uid, label in truth.items()))
    out = tmp_path / "site.json"
    result = CliRunner().invoke(classifier_group, ["train", "--labels", str(csv_path), "--dicom", str(root), "--out", str(out), "--folds", "2"])
    assert result.exit_code == 0, result.output
    assert "2-fold accuracy" in result.output and "true\\pred" in result.output
    assert SeriesClassifier.load(out).labels == list(LABELS)
