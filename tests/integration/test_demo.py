"""The README's demo closes the loop: a generated glioma study goes in by
C-STORE, a glioma job runs from the embedded queue, and SEG, SR, PDF and
secondary captures come back to the sending PACS."""

from __future__ import annotations

from pathlib import Path

import pytest

from radnode.demo import run_demo


@pytest.mark.slow
def test_demo_returns_results_to_the_sending_pacs(tmp_path: Path) -> None:
    out = run_demo(tmp_path, seed=900210, timeout=400)
    received = {s["modality"] for s in out["pacs_received"].values()}
    assert received >= {"SEG", "SR", "DOC", "OT"}
    assert out["sends"]["return_to_sender"]["confirmed"] is True
    wt, unit = out["measurements"]["whole_tumor"]
    assert unit == "mL" and wt == pytest.approx(out["truth"]["volumes_ml"]["whole_tumor"], rel=0.35)
    assert out["report_pdf"].read_bytes().startswith(b"%PDF")
