"""Series-type corrections made by radiologists, kept with the header features.

Why store the features and not only a pointer to the series: the spool is
purged after its retention period, but a correction must still retrain the
site model months later. Each row keeps the feature vector (with its layout
version, so a later radnode can tell it needs the header instead), the
header attributes a reviewer needs to judge the correction without the
images (no patient identifiers), what the classifier said, and who corrected
it when. Every correction is also an audit event (``classifier:correct``).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import Float, Integer, String, Text, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from radnode.store.db import Base
from radnode.store.jobs import record_event

#: Header attributes exported with a correction: acquisition and naming only, never patient data.
HEADER_KEYS = (
    "Modality", "Manufacturer", "ManufacturerModelName", "SoftwareVersions", "SeriesDescription", "ProtocolName",
    "ImageType", "ScanningSequence", "SequenceVariant", "ScanOptions", "MRAcquisitionType", "RepetitionTime", "EchoTime",
    "InversionTime", "FlipAngle", "EchoTrainLength", "MagneticFieldStrength", "SliceThickness", "ContrastBolusAgent",
    "ConvolutionKernel", "BodyPartExamined", "SOPClassUID",
)


class CorrectionRow(Base):
    __tablename__ = "classifier_corrections"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    created_at: Mapped[float] = mapped_column(Float)
    author: Mapped[str] = mapped_column(String(64))
    job_id: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    study_instance_uid: Mapped[str] = mapped_column(String(64), index=True)
    series_instance_uid: Mapped[str] = mapped_column(String(64), index=True)
    series_description: Mapped[str] = mapped_column(Text, default="")
    predicted_label: Mapped[str] = mapped_column(String(32))
    predicted_probability: Mapped[float] = mapped_column(Float)
    corrected_label: Mapped[str] = mapped_column(String(32))
    role: Mapped[str | None] = mapped_column(String(32), nullable=True)
    feature_version: Mapped[int] = mapped_column(Integer)
    features_json: Mapped[str] = mapped_column(Text)
    header_json: Mapped[str] = mapped_column(Text, default="{}")
    note: Mapped[str] = mapped_column(Text, default="")


@dataclass(frozen=True)
class Correction:
    """A correction as the exporter and the trainer see it."""

    id: int
    created_at: float
    author: str
    job_id: str | None
    study_instance_uid: str
    series_instance_uid: str
    series_description: str
    predicted_label: str
    predicted_probability: float
    corrected_label: str
    role: str | None
    feature_version: int
    features: list[float]
    header: dict[str, Any]
    note: str

    def features_array(self) -> np.ndarray:
        return np.asarray([math.nan if v is None else v for v in self.features], dtype=np.float32)


def _json_value(value: Any) -> Any:
    if value is None or isinstance(value, (int, float, str)):
        return value
    try:
        values = list(value)
    except TypeError:
        return str(value)
    return [str(v) for v in values] if not isinstance(value, (bytes, str)) else str(value)


def header_subset(header: Any) -> dict[str, Any]:
    """The exportable, patient-free part of a series header."""
    out: dict[str, Any] = {}
    for key in HEADER_KEYS:
        try:
            value = header.get(key)
        except Exception:  # noqa: BLE001 - a corrupt element is left out
            continue
        if value is None or value == "":
            continue
        out[key] = _json_value(value if not hasattr(value, "original_string") else str(value))
    return out


def add_correction(
    session: Session,
    *,
    author: str,
    study_instance_uid: str,
    series_instance_uid: str,
    series_description: str,
    predicted_label: str,
    predicted_probability: float,
    corrected_label: str,
    features: np.ndarray,
    feature_version: int,
    header: dict[str, Any],
    job_id: str | None = None,
    role: str | None = None,
    note: str = "",
    allowed_labels: Sequence[str],
) -> CorrectionRow:
    """Store one correction and its audit event; validates the label first.

    ``allowed_labels`` are the classifier's labels (``radnode.routing.labels``); the
    caller passes them, so the store does not depend on the routing stage.
    """
    if corrected_label not in allowed_labels:
        raise ValueError(f"corrected_label: {corrected_label!r} is not one of {', '.join(allowed_labels)}")
    if not author:
        raise ValueError("author: must not be empty")
    vec = [None if not math.isfinite(float(v)) else float(v) for v in np.asarray(features, dtype=np.float64)]
    row = CorrectionRow(
        created_at=time.time(), author=author, job_id=job_id, study_instance_uid=study_instance_uid,
        series_instance_uid=series_instance_uid, series_description=series_description[:1024], predicted_label=predicted_label,
        predicted_probability=float(predicted_probability), corrected_label=corrected_label, role=role,
        feature_version=int(feature_version), features_json=json.dumps(vec), header_json=json.dumps(header, sort_keys=True), note=note[:2000],
    )
    session.add(row)
    record_event(session, author, "classifier:correct", job_id=job_id, study_instance_uid=study_instance_uid,
                 detail=f"series {series_instance_uid}: {predicted_label} ({predicted_probability:.2f}) -> {corrected_label}" + (f" for role {role}" if role else ""))
    session.flush()
    return row


def list_corrections(session: Session) -> list[Correction]:
    """Every correction, oldest first; the latest one per series wins when training (see :func:`latest_per_series`)."""
    rows = session.scalars(select(CorrectionRow).order_by(CorrectionRow.id)).all()
    return [
        Correction(
            id=r.id, created_at=r.created_at, author=r.author, job_id=r.job_id, study_instance_uid=r.study_instance_uid,
            series_instance_uid=r.series_instance_uid, series_description=r.series_description, predicted_label=r.predicted_label,
            predicted_probability=r.predicted_probability, corrected_label=r.corrected_label, role=r.role,
            feature_version=r.feature_version, features=json.loads(r.features_json), header=json.loads(r.header_json or "{}"), note=r.note,
        )
        for r in rows
    ]


def latest_per_series(corrections: Sequence[Correction]) -> list[Correction]:
    """The last correction of every series (a radiologist may change their mind)."""
    latest: dict[str, Correction] = {}
    for c in corrections:
        latest[c.series_instance_uid] = c
    return sorted(latest.values(), key=lambda c: c.id)
