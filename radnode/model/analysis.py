"""The values an analysis passes between stages.

What an analyzer declares (:class:`AnalyzerSpec`, :class:`ModelInfo`), what it
is given (:class:`AnalyzerInputs`) and what it returns
(:class:`AnalyzerResult` with label maps, measurements and findings). Routing
reads the declarations, the worker builds the inputs, ``sr_writer`` turns the
results into DICOM — so these types live below every stage and import none of
them (the analyzer protocol itself is in :mod:`radnode.analyzers.base`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
from pydantic import BaseModel, ConfigDict


class NoOptions(BaseModel):
    """For analyzers without options: still rejects unknown keys."""

    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True)
class ModelInfo:
    """Which model produced a result (goes into the output objects)."""

    name: str
    version: str
    demo: bool = False
    manufacturer: str = "radnode"
    intended_use: str = ""


@dataclass(frozen=True)
class AnalyzerSpec:
    """What an analyzer needs and produces."""

    name: str
    version: str
    description: str
    required_roles: tuple[str, ...]
    optional_roles: tuple[str, ...] = ()
    options: type[BaseModel] = NoOptions
    model: ModelInfo | None = None
    outputs: tuple[str, ...] = ()
    #: Measurement rows of the patient's earlier results (same application) that
    #: this analyzer compares against: the worker reads them from the job store
    #: for its follow-up, the writers for trends and prior columns.
    prior_rows: tuple[str, ...] = ()
    #: Urgent work (e.g. haemorrhage): its jobs go ahead of elective ones and
    #: have a worker lane of their own (``queue.urgency`` may override).
    urgent: bool = False

    @property
    def model_version(self) -> str:
        """The version that, with the inputs, identifies a job's results."""
        return f"{self.version}+{self.model.name}-{self.model.version}" if self.model else self.version


@dataclass(frozen=True)
class SeriesInput:
    role: str
    series_instance_uid: str
    files: tuple[Path, ...]
    label: str = ""
    probability: float | None = None


@dataclass(frozen=True)
class AnalyzerInputs:
    study_instance_uid: str
    series: dict[str, SeriesInput]
    options: BaseModel
    job_id: str = ""


@dataclass(frozen=True)
class Segment:
    """One label value of a label map, described for SEG/SR."""

    value: int
    name: str
    #: SNOMED CT (code value, meaning) of the segmented property type.
    property_type: tuple[str, str] | None = None
    property_category: tuple[str, str] = ("49755003", "Morphologically Altered Structure")


@dataclass
class LabelMap:
    """An integer label volume in the geometry of ``reference_role``'s series."""

    name: str
    array: np.ndarray
    reference_role: str
    segments: tuple[Segment, ...]
    #: The instances the array's slices lie on, when not every file of the series
    #: (an analyzer that left out a localizer or a stray reformat names the rest).
    source_files: tuple[Path, ...] = ()


@dataclass(frozen=True)
class Measurement:
    name: str
    value: float
    unit: str
    #: (code value, scheme, meaning) of the quantity, when one exists.
    code: tuple[str, str, str] | None = None
    segment: str | None = None
    #: (code value, scheme, meaning) of how it was measured when that tells two
    #: values of one quantity apart (a volume by voxel count and by ABC/2).
    method: tuple[str, str, str] | None = None


@dataclass(frozen=True)
class ImageRef:
    """One source image (a frame of a multi-frame object) that supports a finding."""

    sop_instance_uid: str
    frame_number: int | None = None


@dataclass(frozen=True)
class Finding:
    """A qualitative finding (present/absent with probability) for detection apps."""

    name: str
    present: bool
    probability: float | None = None
    detail: str = ""
    #: A finding someone must act on now (e.g. haemorrhage): results also go
    #: to the routing rule's ``notify`` destinations.
    critical: bool = False
    #: (code value, scheme, meaning) of the finding (e.g. SCT 1386000 Intracranial
    #: hemorrhage); None: the report uses a local code for ``name``.
    code: tuple[str, str, str] | None = None
    #: Source images the finding was inferred from (e.g. the slices a classifier flagged).
    evidence: tuple[ImageRef, ...] = ()


@dataclass(frozen=True)
class KeySlice:
    """A source slice a report should show, in display windows, with a segment outlined.

    ``index`` counts the label map's slices (sorted along the normal); ``windows``
    are (name, centre, width) in the modality's units (HU for CT).
    """

    title: str
    index: int
    segment: str | None
    windows: tuple[tuple[str, float, float], ...]


@dataclass(frozen=True)
class SliceCurves:
    """Per-slice values of several labels (e.g. classifier probabilities) for a strip plot.

    ``values[k][j]`` belongs to slice *k* (in the analysed order) and ``names[j]``;
    ``thresholds[j]`` is drawn as the decision line of ``names[j]``.
    """

    names: tuple[str, ...]
    values: tuple[tuple[float, ...], ...]
    thresholds: tuple[float, ...] = ()
    title: str = "Per-slice probability"


@dataclass
class AnalyzerResult:
    label_maps: list[LabelMap] = field(default_factory=list)
    measurements: list[Measurement] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    #: Reasons this case deserves a human look (kept for retraining).
    flags: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    #: The model that produced this result, where the analyzer knows it: a job's ``model`` option can
    #: name another than the spec's default, and the output objects must name the one that ran.
    model: ModelInfo | None = None

    def model_or(self, default: ModelInfo | None) -> ModelInfo | None:
        """The model that ran (:attr:`model`), else *default* (the analyzer spec's)."""
        return self.model if self.model is not None else default


#: Called by an analyzer when it enters a stage ("preprocessing", "inferring").
Progress = Callable[[str], None]


@dataclass(frozen=True)
class ApplicationRoles:
    """The series types an application needs (``required``) or can use (``optional``)."""

    name: str
    required: tuple[str, ...]
    optional: tuple[str, ...] = ()
    #: Declared urgency (see ``AnalyzerSpec.urgent``): a built-in application
    #: is urgent before its analyzer exists.
    urgent: bool = False

    @property
    def roles(self) -> tuple[str, ...]:
        return self.required + tuple(r for r in self.optional if r not in self.required)
