"""Head-CT haemorrhage cases for tests: the phantom (``ct_phantom``) run through the real analyzer with the
oracle model (``hemorrhage_oracle``), and what the phantom's geometry says the answer must be."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from radnode.analyzers.base import AnalyzerInputs, AnalyzerResult, SeriesInput
from radnode.analyzers.hemorrhage.analyzer import HemorrhageAnalyzer, HemorrhageOptions
from radnode.analyzers.runtime import CPU_PROVIDER, ModelStore, SessionCache
from tests.support.ct_phantom import BLOB, BLOB_R, Series, write_ct_series
from tests.support.hemorrhage_oracle import write_oracle_model

TILT = 18.0


def oracle_analyzer(models: Path) -> HemorrhageAnalyzer:
    """The analyzer with the oracle model as the only model (no built-in folder), on the CPU."""
    write_oracle_model(models / "hemorrhage-oracle")
    return HemorrhageAnalyzer(ModelStore([models], builtin_dir=None), SessionCache([CPU_PROVIDER]))


@dataclass
class Case:
    series: Series
    result: AnalyzerResult
    workdir: Path

    @property
    def summary(self) -> dict:  # type: ignore[type-arg]
        return self.result.extra["summary"]  # type: ignore[no-any-return]


def run_case(analyzer: HemorrhageAnalyzer, root: Path, **phantom: object) -> Case:
    """Write a phantom series under *root* and analyse it (``phantom``: ``write_ct_series`` arguments)."""
    series = write_ct_series(root / "dicom", **phantom)  # type: ignore[arg-type]
    work = root / "work"
    work.mkdir(parents=True)
    inputs = AnalyzerInputs("1.2.826.0.1.3680043.8.498.16.1",
                            {"ct_brain": SeriesInput("ct_brain", "1.2.3", tuple(series.files))},
                            HemorrhageOptions(), job_id=f"test-{root.name}")
    return Case(series, analyzer.run(inputs, work, lambda stage: None), work)


def section_radius_mm(series: Series, k: int, centre: np.ndarray = BLOB, radius: float = BLOB_R) -> float:
    """Radius (mm) of the blob's cross-section in written slice *k*'s plane; 0 when the plane misses it."""
    s = series.slices[k]
    normal = np.cross(s.row, s.col)
    d = abs(float(np.dot(np.asarray(centre) - s.position, normal)))
    return float(np.sqrt(radius**2 - d**2)) if d < radius else 0.0
