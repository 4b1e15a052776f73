"""The analyzer interface every application implements.

An analyzer declares what it needs (series roles, options) and what it
produces, then computes: ``run(inputs, workdir, progress)`` takes the chosen
series and a private work folder and returns label maps, measurements and
findings. It never writes DICOM results and never talks to the network or the
job store — the worker does that — so analyzers stay testable on a folder.

The value types live in :mod:`radnode.model.analysis` (routing and sr_writer
read them too); they are re-exported here so an analyzer finds its whole
contract in one import.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import ClassVar, Protocol, runtime_checkable

from radnode.model.analysis import (
    AnalyzerInputs,
    AnalyzerResult,
    AnalyzerSpec,
    Finding,
    LabelMap,
    Measurement,
    ModelInfo,
    NoOptions,
    Progress,
    Segment,
    SeriesInput,
)

__all__ = [
    "Analyzer",
    "AnalyzerError",
    "AnalyzerInputs",
    "AnalyzerResult",
    "AnalyzerSpec",
    "Finding",
    "FollowUpAnalyzer",
    "InputError",
    "LabelMap",
    "Measurement",
    "ModelInfo",
    "NoOptions",
    "Progress",
    "Segment",
    "SeriesInput",
]


class AnalyzerError(Exception):
    """A permanent failure: retrying the same inputs cannot help."""


class InputError(AnalyzerError):
    """The inputs are unusable (missing role, corrupt pixels, 2-slice series)."""


class Analyzer(Protocol):
    spec: ClassVar[AnalyzerSpec]

    def run(self, inputs: AnalyzerInputs, workdir: Path, progress: Progress) -> AnalyzerResult: ...


@runtime_checkable
class FollowUpAnalyzer(Protocol):
    """An analyzer that compares its result with the patient's earlier results.

    The worker, which owns the job store, reads the rows named by
    ``spec.prior_rows`` of this patient's earlier exams (oldest first, as
    ``(study date, {row name: value})``) and calls :meth:`follow_up` before the
    measurements are stored and the results written. The analyzer adds what
    the comparison yields to *result* (``extra`` and measurement rows) and
    returns the rows it added. Still no store and no network in the analyzer.
    """

    spec: AnalyzerSpec

    def follow_up(self, result: AnalyzerResult, prior_rows: Sequence[tuple[str, Mapping[str, float]]],
                  patient_key: str) -> list[Measurement]: ...
