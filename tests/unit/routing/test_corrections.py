"""Corrections: stored with features and audited, exported, split honestly,
and a site model is used only after it has shown its held-out accuracy."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from radnode.store import jobs as store
from radnode.routing.classifier import ClassifierError, SeriesClassifier
from radnode.commands.classifier import classifier_group
from radnode.routing.corrections import (
    CorrectionError,
    all_corrections,
    check_site_model,
    correct_series,
    export_csv,
    export_json,
    split_holdout,
)
from radnode.routing.features import feature_matrix, n_features
from radnode.routing.labels import LABELS
from radnode.routing.setup import load_classifier
from radnode.store.db import open_store
from radnode.settings import Settings
from radnode.synth.mr_study import generate_mr_study
from radnode.routing.corpus import generate_corpus


@pytest.fixture(scope="module")
def tiny_model() -> SeriesClassifier:
    items = generate_corpus(seed=5, studies_per_family=2)
    return SeriesClassifier(rounds=8).fit_matrix(feature_matrix([i.summary for i in items]), [i.label for i in items], label_order=LABELS)


@pytest.fixture()
def node(tmp_path: Path):  # type: ignore[no-untyped-def]
    settings = Settings(data_dir=tmp_path / "data")
    _, sessions = open_store(settings)
    study = generate_mr_study(tmp_path / "gen", seed=2, series=("t1", "t2", "flair"), rows=16, columns=16, slices=4)
    for series in study.series:
        target = settings.spool_dir / study.study_instance_uid / series.series_instance_uid
        target.mkdir(parents=True)
        for f in series.files:
            (target / f"{f.stem}.dcm").write_bytes(f.read_bytes())
    return settings, sessions, study


def test_correction_is_stored_with_features_audited_and_exported(node, tiny_model: SeriesClassifier, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    settings, sessions, study = node
    t2 = study.by_label("t2").series_instance_uid
    out = correct_series(settings, sessions, tiny_model, study_instance_uid=study.study_instance_uid, series_instance_uid=t2,
                         label="flair", author="rita", job_id="job-1", note="site calls its FLAIR 'T2'")
    assert out["corrected"] == "flair"
    [c] = all_corrections(sessions)
    assert (c.series_instance_uid, c.corrected_label, c.author, c.job_id) == (t2, "flair", "rita", "job-1")
    assert len(c.features) == n_features()
    assert "PatientName" not in c.header and "PatientID" not in c.header and c.header["Modality"] == "MR"
    with sessions() as s:
        events = [e for e in store.job_events(s, "job-1") if e.action == "classifier:correct"]
    assert len(events) == 1 and events[0].actor == "rita"
    [item] = json.loads(export_json([c]))
    assert item["corrected_label"] == "flair" and item["predicted_label"] in LABELS and len(item["features"]) == len(c.features)
    [row] = list(csv.DictReader(io.StringIO(export_csv([c]))))
    assert row["series_instance_uid"] == t2 and json.loads(row["header"])["Modality"] == "MR"
    # The command line reads the same store (settings from the environment).
    monkeypatch.setenv("RADNODE_DATA_DIR", str(settings.data_dir))
    result = CliRunner().invoke(classifier_group, ["corrections", "export", "--csv"])
    assert result.exit_code == 0, result.output
    assert t2 in result.output and "flair" in result.output


def test_bad_corrections_are_refused(node, tiny_model: SeriesClassifier) -> None:  # type: ignore[no-untyped-def]
    settings, sessions, study = node
    t2 = study.by_label("t2").series_instance_uid
    with pytest.raises(CorrectionError, match="label"):
        correct_series(settings, sessions, tiny_model, study_instance_uid=study.study_instance_uid, series_instance_uid=t2, label="t7", author="rita")
    with pytest.raises(CorrectionError, match="not in the spool"):
        correct_series(settings, sessions, tiny_model, study_instance_uid=study.study_instance_uid, series_instance_uid="1.2.3", label="t2", author="rita")
    assert all_corrections(sessions) == []


def test_holdout_split_is_stable_and_needs_four_corrections() -> None:
    from radnode.store.corrections import Correction

    def make(uid: str) -> Correction:
        return Correction(0, 0.0, "a", None, "1", uid, "", "t2", 0.9, "flair", None, 2, [], {}, "")

    few = [make(f"1.2.{i}") for i in range(3)]
    assert split_holdout(few) == (few, [])
    many = [make(f"1.2.{i}") for i in range(40)]
    train, held = split_holdout(many)
    assert held and train and len(train) + len(held) == 40 and not set(c.series_instance_uid for c in train) & set(c.series_instance_uid for c in held)
    assert split_holdout(many) == (train, held)


def test_site_model_is_used_only_after_its_held_out_check(tiny_model: SeriesClassifier, tmp_path: Path) -> None:
    path = tmp_path / "site.json"
    assert tiny_model.meta is not None
    cases = {
        "no held-out": ({"n_corrections": 2, "n_train": 2, "n_held_out": 0}, "no held-out corrections"),
        "worse than shipped": ({"n_held_out": 5, "site_accuracy": 0.8, "reference_accuracy": 1.0}, "not used"),
        "below minimum": ({"n_held_out": 5, "site_accuracy": 0.6, "reference_accuracy": 0.2}, "not used"),
    }
    for name, (report, message) in cases.items():
        tiny_model.meta.extra["site_holdout"] = report
        tiny_model.save(path)
        with pytest.raises(ClassifierError, match=message):
            check_site_model(SeriesClassifier.load(path), path)
        with pytest.raises(ClassifierError, match=message):
            load_classifier(Settings(data_dir=tmp_path / "d", routing={"classifier_model": str(path)}))
    tiny_model.meta.extra["site_holdout"] = {"n_held_out": 5, "site_accuracy": 1.0, "reference_accuracy": 0.6}
    tiny_model.save(path)
    clf = load_classifier(Settings(data_dir=tmp_path / "d", routing={"classifier_model": str(path)}))
    assert clf.meta is not None and clf.meta.extra["site_holdout"]["site_accuracy"] == 1.0
    del tiny_model.meta.extra["site_holdout"]


def test_site_model_learns_the_corrected_series(tiny_model: SeriesClassifier) -> None:
    from radnode.routing.corrections import train_site_model
    from radnode.store.corrections import Correction

    items = generate_corpus(seed=6, studies_per_family=2)
    x = feature_matrix([i.summary for i in items])
    t2_rows = [i for i, it in enumerate(items) if it.label == "t2"][:6]
    corrections = [Correction(k, 0.0, "a", None, "1", f"1.2.{k}", "", "t2", 0.9, "flair", None, 2, [None if np.isnan(v) else float(v) for v in x[i]], {}, "")
                   for k, i in enumerate(t2_rows)]
    site, report = train_site_model(corrections, x, [i.label for i in items], reference=tiny_model)
    assert report["n_held_out"] >= 1 and report["n_train"] + report["n_held_out"] == 6
    trained = [c for c in corrections if c.series_instance_uid not in report["held_out_series"]]
    pred = site.predict_proba_matrix(np.vstack([c.features_array() for c in trained])).argmax(axis=1)
    assert all(LABELS[int(k)] == "flair" for k in pred)


def test_another_series_for_a_role_reruns_the_job_and_is_a_correction(node, tiny_model: SeriesClassifier) -> None:  # type: ignore[no-untyped-def]
    from radnode.routing.corrections import rerun_with_series

    settings, sessions, study = node
    t1, t2, flair = (study.by_label(k).series_instance_uid for k in ("t1", "t2", "flair"))
    with sessions.begin() as s:
        old, _ = store.create_job(s, store.JobRequest(study.study_instance_uid, "glioma", "0.1.0", {"t1": t1, "flair": t2}))
        old_id = old.job_id
    out = rerun_with_series(settings, sessions, tiny_model, job_id=old_id, role="flair", series_instance_uid=flair, author="rita")
    assert out["created"] and out["job_id"] != old_id
    with sessions() as s:
        new = store.get_job(s, out["job_id"])
        assert new.series == {"t1": t1, "flair": flair} and new.state == "queued" and new.published_at is None
        assert any(e.action == "job:rerun-with-series" for e in store.job_events(s, out["job_id"]))
    [c] = all_corrections(sessions)
    assert (c.series_instance_uid, c.corrected_label, c.role) == (flair, "flair", "flair")
    with pytest.raises(CorrectionError, match="role"):
        rerun_with_series(settings, sessions, tiny_model, job_id=old_id, role="t2", series_instance_uid=flair, author="rita")
