"""Analyzer plugins for tests, loaded through the real plugin mechanism
(``analyzers.plugins: ["tests.support.analyzers:CountingAnalyzer"]``)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from radnode.analyzers.base import AnalyzerInputs, AnalyzerResult, AnalyzerSpec, Measurement, Progress


class CountOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    #: Seconds to spend "inferring" (to kill a worker mid-job).
    sleep: float = 0.0
    #: A file each finished run appends "job_id pid" to (to count runs).
    marker: str | None = None


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
        count = sum(len(s.files) for s in inputs.series.values())
        (workdir / "count.txt").write_text(str(count))
        if opts.marker:
            with open(opts.marker, "a") as fh:
                fh.write(f"{inputs.job_id} {os.getpid()}\n")
        return AnalyzerResult(measurements=[Measurement("instances", count, "{count}")])


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
