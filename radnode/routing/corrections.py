"""Corrections of the series classifier: record them, export them, and learn from them.

A radiologist who sees a series labelled wrongly on a job page corrects it
(or picks another series for a role). The correction is stored with the
series' header features (``radnode.store.corrections``), audited, exported
for review (``radnode classifier corrections export``) and used by
``radnode classifier train --with-corrections`` to build a *site model*.

The site model is only trusted after it shows, on a held-out split of the
site's own corrections, that it answers them better than the shipped model
and at least :data:`MIN_SITE_ACCURACY`; :func:`check_site_model` enforces that
when the node loads a model named by ``routing.classifier_model``.
"""

from __future__ import annotations

import csv
import io
import json
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import structlog
from sqlalchemy.orm import Session, sessionmaker

from radnode.routing.classifier import ClassifierError, SeriesClassifier
from radnode.routing.features import FEATURE_VERSION, extract_features
from radnode.routing.labels import LABELS
from radnode.routing.series_index import SeriesSummary, scan_series
from radnode.settings import Settings
from radnode.store.corrections import Correction, add_correction, header_subset, latest_per_series, list_corrections

log = structlog.get_logger(__name__)

#: A site model must reach this accuracy on its held-out corrections to be used.
MIN_SITE_ACCURACY = 0.9
#: Share of the site's corrected series held out to test the site model.
HOLDOUT_SHARE = 0.3
#: Weight of a corrected series against one generated series in training.
CORRECTION_WEIGHT = 20.0


class CorrectionError(ValueError):
    """A correction cannot be made (unknown series or label)."""


def study_series(settings: Settings, study_instance_uid: str) -> list[SeriesSummary]:
    """The series of one study as they sit in the spool."""
    folder = settings.spool_dir / study_instance_uid
    return scan_series(folder) if folder.is_dir() else []


def series_table(settings: Settings, classifier: SeriesClassifier, study_instance_uid: str) -> list[dict[str, Any]]:
    """One row per series of the study with the classifier's answer (for the job page)."""
    summaries = study_series(settings, study_instance_uid)
    predictions = classifier.predict(summaries) if summaries else []
    return [
        {"series_instance_uid": s.series_instance_uid, "series_number": s.series_number, "description": s.series_description,
         "modality": s.modality, "instances": s.instance_count, "label": p.label, "probability": p.probability}
        for s, p in zip(summaries, predictions)
    ]


def correct_series(
    settings: Settings,
    sessions: sessionmaker[Session],
    classifier: SeriesClassifier,
    *,
    study_instance_uid: str,
    series_instance_uid: str,
    label: str,
    author: str,
    job_id: str | None = None,
    role: str | None = None,
    note: str = "",
) -> dict[str, Any]:
    """Record that *series_instance_uid* is *label*; returns what was stored."""
    if label not in LABELS:
        raise CorrectionError(f"label: {label!r} is not one of {', '.join(LABELS)}")
    matches = [s for s in study_series(settings, study_instance_uid) if s.series_instance_uid == series_instance_uid]
    if not matches:
        raise CorrectionError(f"series {series_instance_uid} is not in the spool of study {study_instance_uid}")
    summary = matches[0]
    [prediction] = classifier.predict([summary])
    with sessions.begin() as session:
        row = add_correction(
            session, author=author, study_instance_uid=study_instance_uid, series_instance_uid=series_instance_uid,
            series_description=summary.series_description, predicted_label=prediction.label,
            predicted_probability=prediction.probability, corrected_label=label, features=extract_features(summary),
            feature_version=FEATURE_VERSION, header=header_subset(summary.header), job_id=job_id, role=role, note=note,
            allowed_labels=LABELS,
        )
        out = {"id": row.id, "series_instance_uid": series_instance_uid, "predicted": prediction.label, "corrected": label}
    log.info("classifier corrected", job_id=job_id, predicted=prediction.label, corrected=label)
    return out


# --- export ---------------------------------------------------------------------------

EXPORT_FIELDS = ("id", "created_at", "author", "job_id", "study_instance_uid", "series_instance_uid", "series_description",
                 "predicted_label", "predicted_probability", "corrected_label", "role", "feature_version", "note")


def export_json(corrections: Sequence[Correction]) -> str:
    """Every correction with its header attributes and feature vector."""
    return json.dumps(
        [{**{k: getattr(c, k) for k in EXPORT_FIELDS}, "header": c.header, "features": c.features} for c in corrections],
        indent=2,
    )


def export_csv(corrections: Sequence[Correction]) -> str:
    """One row per correction (header attributes as JSON in one column; no feature vector)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([*EXPORT_FIELDS, "header"])
    for c in corrections:
        writer.writerow([*(getattr(c, k) for k in EXPORT_FIELDS), json.dumps(c.header, sort_keys=True)])
    return buf.getvalue()


# --- training the site model -----------------------------------------------------------


def split_holdout(corrections: Sequence[Correction], share: float = HOLDOUT_SHARE) -> tuple[list[Correction], list[Correction]]:
    """(train, held out): a stable split by series UID (crc32), so re-running gives the same split.

    With fewer than four corrections nothing can be held out honestly: all
    are used for training and the held-out list is empty.
    """
    if len(corrections) < 4:
        return list(corrections), []
    held = [c for c in corrections if (zlib.crc32(c.series_instance_uid.encode()) % 1000) / 1000.0 < share]
    if not held:
        held = [corrections[-1]]
    train = [c for c in corrections if c not in held]
    return train, held


def usable(corrections: Sequence[Correction]) -> list[Correction]:
    """Corrections whose stored features fit this radnode's feature layout (latest per series)."""
    return [c for c in latest_per_series(corrections) if c.feature_version == FEATURE_VERSION]


def train_site_model(
    corrections: Sequence[Correction],
    base_x: np.ndarray,
    base_labels: Sequence[str],
    *,
    seed: int = 0,
    reference: SeriesClassifier | None = None,
) -> tuple[SeriesClassifier, dict[str, Any]]:
    """Train on the generated corpus plus the site's corrections; score both models on the held-out corrections.

    Corrections are repeated (:data:`CORRECTION_WEIGHT`) so a handful of
    site series count against thousands of generated ones. Returns the model
    and its held-out report (also stored in the model's metadata).
    """
    rows = usable(corrections)
    if not rows:
        raise ClassifierError("no corrections with this radnode's feature layout: nothing to learn from")
    train, held = split_holdout(rows)
    reps = int(CORRECTION_WEIGHT)
    x_site = np.vstack([c.features_array() for c in train]) if train else np.zeros((0, base_x.shape[1]), dtype=np.float32)
    x = np.vstack([base_x] + [x_site] * reps)
    y = list(base_labels) + [c.corrected_label for c in train] * reps
    clf = SeriesClassifier(seed=seed).fit_matrix(x, y, label_order=LABELS, text_augment=True)
    report: dict[str, Any] = {"n_corrections": len(rows), "n_train": len(train), "n_held_out": len(held)}
    if held:
        xh = np.vstack([c.features_array() for c in held])
        truth = [c.corrected_label for c in held]
        site_pred = [LABELS[int(i)] for i in clf.predict_proba_matrix(xh).argmax(axis=1)]
        report["site_accuracy"] = sum(t == p for t, p in zip(truth, site_pred)) / len(held)
        if reference is not None:
            ref_pred = [LABELS[int(i)] for i in reference.predict_proba_matrix(xh).argmax(axis=1)]
            report["reference_accuracy"] = sum(t == p for t, p in zip(truth, ref_pred)) / len(held)
        report["held_out_series"] = [c.series_instance_uid for c in held]
    assert clf.meta is not None
    clf.meta.accuracy = report.get("site_accuracy")
    clf.meta.accuracy_kind = "held-out split of the site's own corrections"
    clf.meta.extra["site_holdout"] = report
    if reference is not None and reference.meta is not None:
        clf.meta.extra["temperature"] = reference.meta.extra.get("temperature", 1.0)
    return clf, report


def check_site_model(clf: SeriesClassifier, path: Path) -> None:
    """Refuse a site model that has not shown it answers the site's held-out corrections well.

    A model without a ``site_holdout`` record (e.g. one trained with
    ``classifier train --labels``) is accepted as the site's own choice.
    """
    meta = clf.meta
    if meta is None:
        raise ClassifierError(f"{path}: no metadata")
    report = meta.extra.get("site_holdout")
    if report is None:
        return
    if not report.get("n_held_out"):
        raise ClassifierError(f"{path}: site model has no held-out corrections to show its accuracy on (need at least 4 corrected series)")
    site = float(report.get("site_accuracy", 0.0))
    reference = float(report.get("reference_accuracy", 0.0))
    if site < MIN_SITE_ACCURACY or site < reference:
        raise ClassifierError(
            f"{path}: site model answers {site:.0%} of its held-out corrections (shipped model {reference:.0%}, minimum {MIN_SITE_ACCURACY:.0%}); not used"
        )


def all_corrections(sessions: sessionmaker[Session]) -> list[Correction]:
    with sessions() as session:
        return list_corrections(session)


def rerun_with_series(
    settings: Settings,
    sessions: sessionmaker[Session],
    classifier: SeriesClassifier,
    *,
    job_id: str,
    role: str,
    series_instance_uid: str,
    author: str,
) -> dict[str, Any]:
    """Use *series_instance_uid* for *role* and queue the job again with that input.

    A new job is created (the old one is superseded, not deleted, as when the
    router re-plans); when the role is a series type (``t1c``, ``flair``…) the
    choice is also recorded as a label correction, so it retrains.
    """
    from radnode.model.jobs import Destination, Trigger
    from radnode.store import jobs as store

    with sessions() as session:
        try:
            row = store.get_job(session, job_id)
        except store.JobNotFound as exc:
            raise CorrectionError(str(exc)) from exc
        series = dict(row.series)
        if role not in series:
            raise CorrectionError(f"role: job {job_id} has no role {role!r} (roles: {', '.join(series)})")
        study = row.study_instance_uid
        selection = json.loads(row.selection_json or "{}")
        request_args = dict(
            study_instance_uid=study, application=row.application, model_version=row.model_version, trigger=Trigger(row.trigger),
            accession=row.accession, options=json.loads(row.options_json),
            destinations=[Destination.model_validate(d) for d in json.loads(row.destinations_json)],
            patient_key=row.patient_key, study_date=row.study_date, priority=row.priority,
        )
    if series_instance_uid not in {s.series_instance_uid for s in study_series(settings, study)}:
        raise CorrectionError(f"series {series_instance_uid} is not in the spool of study {study}")
    if role in LABELS:
        correct_series(settings, sessions, classifier, study_instance_uid=study, series_instance_uid=series_instance_uid,
                       label=role, author=author, job_id=job_id, role=role, note=f"chosen for role {role}")
    series[role] = series_instance_uid
    selection[role] = {"series_instance_uid": series_instance_uid, "label": role, "probability": 1.0, "chosen_by": author}
    with sessions.begin() as session:
        new, created = store.create_job(session, store.JobRequest(series=series, selection=selection, **request_args), actor=author)  # type: ignore[arg-type]
        store.record_event(session, author, "job:rerun-with-series", job_id=new.job_id, study_instance_uid=study,
                           detail=f"role {role} -> series {series_instance_uid} (was job {job_id})")
        return {"job_id": new.job_id, "created": created}
