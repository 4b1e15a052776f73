"""Analyzer plugins for tests, loaded through the real plugin mechanism
(``analyzers.plugins: ["tests.support.analyzers:CountingAnalyzer"]``)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from radnode.analyzers.base import (
    AnalyzerError,
    AnalyzerInputs,
    AnalyzerResult,
    AnalyzerSpec,
    Finding,
    LabelMap,
    Measurement,
    ModelInfo,
    Progress,
    Segment,
)


class CountOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    #: Seconds to spend "inferring" (to kill a worker mid-job).
    sleep: float = 0.0
    #: A file each finished run appends "job_id pid" to (to count runs).
    marker: str | None = None
    #: A file to wait for before finishing: the test decides when a "long"
    #: job ends, so ordering tests need no timing (gives up after 5 minutes).
    gate: str | None = None


class CountingAnalyzer:
    """Counts the instances of its inputs; records each completed run."""

    spec = AnalyzerSpec(
        name="count-test",
        version="1.0",
        description="test analyzer: counts input instances",
        required_roles=("t1c", "flair"),
        options=CountOptions,
    )

    def run(self, inputs: AnalyzerInputs, workdir: Path, progress: Progress) -> AnalyzerResult:
        opts = inputs.options
        assert isinstance(opts, CountOptions)
        progress("inferring")
        deadline = time.monotonic() + opts.sleep
        while time.monotonic() < deadline:
            time.sleep(0.05)
        if opts.gate:
            gave_up = time.monotonic() + 300
            while not os.path.exists(opts.gate):
                if time.monotonic() > gave_up:
                    raise AnalyzerError(f"gate {opts.gate} never opened")
                time.sleep(0.05)
        count = sum(len(s.files) for s in inputs.series.values())
        (workdir / "count.txt").write_text(str(count))
        if opts.marker:
            with open(opts.marker, "a") as fh:
                fh.write(f"{inputs.job_id} {os.getpid()}\n")
        return AnalyzerResult(measurements=[Measurement("instances", count, "{count}")])


class UrgentCountingAnalyzer(CountingAnalyzer):
    """The counting analyzer as an urgent application (as hemorrhage is):
    its jobs go ahead of elective ones and run in the urgent lane."""

    spec = AnalyzerSpec(
        name="urgent-test",
        version="1.0",
        description="test analyzer: counts input instances, urgently",
        required_roles=("t1c", "flair"),
        options=CountOptions,
        urgent=True,
    )


class CriticalCountingAnalyzer(CountingAnalyzer):
    """The counting analyzer that also reports findings as a detector would:
    one present and critical, one critical but absent, one present but not
    critical — only the first may flag the job."""

    spec = AnalyzerSpec(
        name="critical-count-test",
        version="1.0",
        description="test analyzer: counts input instances and reports a critical finding",
        required_roles=("t1c", "flair"),
        options=CountOptions,
    )

    def run(self, inputs: AnalyzerInputs, workdir: Path, progress: Progress) -> AnalyzerResult:
        result = super().run(inputs, workdir, progress)
        result.findings += [
            Finding("haemorrhage", True, 0.97, "stand-in critical finding", critical=True),
            Finding("midline shift", False, 0.08, critical=True),
            Finding("old infarct", True, 0.81),
        ]
        return result


class PoisonAnalyzer:
    """Raises every time: its jobs must end dead-lettered, not loop."""

    spec = AnalyzerSpec(
        name="poison-test",
        version="1.0",
        description="test analyzer: always raises",
        required_roles=("t1c",),
    )

    def run(self, inputs: AnalyzerInputs, workdir: Path, progress: Progress) -> AnalyzerResult:
        raise RuntimeError("poisoned analyzer: this always fails")


class ThresholdAnalyzer:
    """A fast stand-in segmentation: the brightest voxels of the T1c series.

    Exercises the whole results path (SEG, SR, PDF, SC, send, confirm)
    without minutes of preprocessing; the label map is in the T1c geometry
    exactly as a real analyzer's.
    """

    spec = AnalyzerSpec(
        name="threshold-test",
        version="1.0",
        description="test analyzer: threshold segmentation",
        required_roles=("t1c",),
        model=ModelInfo(name="threshold-test", version="1.0", demo=True, intended_use="tests"),
        outputs=("seg", "sr", "pdf", "secondary_capture"),
    )

    def run(self, inputs: AnalyzerInputs, workdir: Path, progress: Progress) -> AnalyzerResult:
        import numpy as np
        import SimpleITK as sitk

        from radnode.analyzers.volumes import load_series

        progress("inferring")
        image = load_series(inputs.series["t1c"].files)
        arr = sitk.GetArrayFromImage(image)
        labels = np.zeros(arr.shape, np.uint8)
        labels[arr > np.percentile(arr, 90)] = 1
        labels[arr > np.percentile(arr, 98)] = 2
        ml = float(np.prod(image.GetSpacing())) / 1000
        segments = (
            Segment(1, "Bright", ("6574001", "Necrosis")),
            Segment(2, "Brightest", ("79654002", "Edema")),
        )
        return AnalyzerResult(
            label_maps=[LabelMap("threshold", labels, "t1c", segments)],
            measurements=[
                Measurement("bright", round(float((labels == 1).sum()) * ml, 3), "mL", ("118565006", "SCT", "Volume"), "Bright"),
                Measurement("brightest", round(float((labels == 2).sum()) * ml, 3), "mL", ("118565006", "SCT", "Volume"), "Brightest"),
            ],
        )


class CriticalThresholdAnalyzer(ThresholdAnalyzer):
    """The threshold stand-in plus a critical finding (as a haemorrhage
    detector would report), to exercise ``notify`` destinations."""

    spec = AnalyzerSpec(
        name="critical-test",
        version="1.0",
        description="test analyzer: threshold segmentation with a critical finding",
        required_roles=("t1c",),
        model=ModelInfo(name="critical-test", version="1.0", demo=True, intended_use="tests"),
        outputs=("seg", "sr", "pdf", "secondary_capture"),
    )

    def run(self, inputs: AnalyzerInputs, workdir: Path, progress: Progress) -> AnalyzerResult:
        from radnode.analyzers.base import Finding

        result = super().run(inputs, workdir, progress)
        result.findings.append(Finding("haemorrhage", True, 0.96, "stand-in critical finding", critical=True))
        return result
