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

from pathlib import Path
from typing import ClassVar, Protocol

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
