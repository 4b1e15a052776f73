"""CI regression check for ingest throughput: radnode against DCMTK storescp in the same run.

Never an absolute time (CI machines differ and are shared): radnode's images/s is divided by
storescp's, measured alternately in this run on the same data, and the test fails only when that
ratio falls below a generous floor — about half of what radnode reached when the floor was set
(the way Orthanc's performance test guards its ingest). A failure means a large regression in the
receive path (e.g. sleep-polling back between PDUs), not noise.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ListenerProcess, wait_until
from tests.support import dcmtk
from tests.support.ports import free_port

pytestmark = [pytest.mark.slow, pytest.mark.serial]

#: The default settings (fsync on, through the spool journal): measured 0.25-0.35 on the 2-core
#: CI-class machine after the C-STORE fast path and the journal (BENCHMARKS.md), 0.15-0.20 with
#: fsync off before them, 0.10 before the event-driven receive path.
RATIO_FLOOR = float(os.environ.get("RADNODE_INGEST_RATIO_FLOOR", "0.12"))
COUNT = 200


def _send(port: int, folder: Path, called: str) -> float:
    t0 = time.perf_counter()
    res = dcmtk.storescu("127.0.0.1", port, folder, called, timeout=120)
    wall = time.perf_counter() - t0
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    return wall


def test_ingest_ratio_to_storescp_stays_above_the_floor(tmp_path: Path) -> None:
    from radnode.synth.mr_study import generate_mr_study

    generate_mr_study(tmp_path / "study", seed=4, series=("t1", "t2"), rows=256, columns=256, slices=COUNT // 2)
    radnode_s: list[float] = []
    storescp_s: list[float] = []
    for rnd in range(3):
        port = free_port()
        proc = dcmtk.storescp_process(port, tmp_path / f"storescp-{rnd}", aet="RADNODE", extra_args=("+xa",))
        try:
            from tests.conftest import wait_for_port

            wait_for_port(port, proc=proc)  # type: ignore[arg-type]
            time.sleep(0.3)
            storescp_s.append(_send(port, tmp_path / "study", "RADNODE"))
        finally:
            proc.terminate()
            proc.wait(10)
        lp = ListenerProcess(tmp_path / f"radnode-{rnd}", free_port(), env={"RADNODE_LOGGING__LEVEL": "info"})
        lp.start()
        try:
            # The port opens before the other listener processes have imported radnode: measuring then
            # would time their start-up, not ingest.
            wait_until(lambda: "dicom listener serving" in lp.log.read_text(errors="replace"), timeout=90)
            time.sleep(0.3)
            radnode_s.append(_send(lp.port, tmp_path / "study", "RADNODE"))
        finally:
            lp.stop()
    ratio = min(storescp_s) / min(radnode_s)  # best of 3 each: the least disturbed run of both
    print(f"storescp {COUNT / min(storescp_s):.0f} img/s, radnode {COUNT / min(radnode_s):.0f} img/s, ratio {ratio:.2f}", file=sys.stderr)
    assert ratio >= RATIO_FLOOR, f"radnode/storescp ingest ratio {ratio:.2f} below the floor {RATIO_FLOOR}"
