"""Head CT triage latency: last image received → SEG and SR stored in the PACS.

Issue 16 asks for ≤ 20 s for a 40-slice head CT on 2 CPU cores, even while a
glioma job runs. This bench starts a real Orthanc as the PACS and radnode as
``radnode listen`` + ``radnode worker`` over RabbitMQ (127.0.0.1:5672, or
``RADNODE_TEST_AMQP_URL``) with the default applications and demo models,
then per round:

1. Orthanc sends a generated glioma study (the long elective job) and the
   bench waits until that job is running;
2. Orthanc sends a generated 40-slice head CT with a bleed;
3. the clock runs from the head CT's last instance received by radnode
   (the study row's ``last_received_at``) to the moment Orthanc holds both
   the SEG and the SR of it (polled every 0.2 s), and the glioma job's state
   at that moment is recorded (still running = the hemorrhage job overtook it).

It also prints the job's own stage times (queued → preprocessing → done).
Figures go to BENCHMARKS.md; nothing here asserts a time.

    python bench/hemorrhage_latency.py [--rounds 3] [--slices 40]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from radnode.store import jobs as jobstore  # noqa: E402
from radnode.store.db import open_store  # noqa: E402
from radnode.store.studies import StudyRow  # noqa: E402
from radnode.synth.glioma import generate_glioma_study  # noqa: E402
from radnode.synth.hemorrhage import generate_hemorrhage_study  # noqa: E402
from tests.support.orthanc import OrthancServer  # noqa: E402
from tests.integration.jobs_support import settings_from_env  # noqa: E402
from tests.support.ports import free_port  # noqa: E402

AMQP = os.environ.get("RADNODE_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")


def _wait(predicate, timeout: float, what: str, poll: float = 0.2):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise SystemExit(f"timed out waiting for {what}")


def _jobs(sessions, study_uid: str) -> list:  # type: ignore[no-untyped-def]
    with sessions() as s:
        return [j for j in jobstore.list_jobs(s) if j.study_instance_uid == study_uid]


def _modalities(pacs: OrthancServer, study_uid: str) -> set[str]:
    found = pacs.post("/tools/find", {"Level": "Series", "Query": {"StudyInstanceUID": study_uid}, "Expand": True})
    return {s["MainDicomTags"].get("Modality", "") for s in found}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--slices", type=int, default=40, help="head CT slices (slice thickness chosen to give about this many)")
    ap.add_argument("--no-glioma", action="store_true", help="without the concurrent glioma job")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="radnode-hem-bench-"))
    pacs = OrthancServer(work / "orthanc", aet="HOSPITALPACS").start()
    ns = f"bench{uuid.uuid4().hex[:8]}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RADNODE_")}
    env.update(
        RADNODE_DATA_DIR=str(work / "data"), RADNODE_PORT=str(free_port()), RADNODE_QUIET_SECONDS="10",
        RADNODE_QUEUE__BROKER_URL=AMQP, RADNODE_QUEUE__NAMESPACE=ns,
        RADNODE_PEERS=json.dumps([{"name": "hospital", "ae_title": "HOSPITALPACS", "host": "127.0.0.1",
                                   "port": pacs.dicom_port}]),
        RADNODE_ANALYZERS__PROVIDERS='["CPUExecutionProvider"]',
    )
    procs = [subprocess.Popen([sys.executable, "-m", "radnode.cli", *cmd], env=env, cwd=work,
                              stdout=open(work / f"{cmd[0]}.log", "ab"), stderr=subprocess.STDOUT)
             for cmd in (["listen"], ["worker", "--apps", "glioma,hemorrhage"])]
    settings = settings_from_env(env)
    _, sessions = open_store(settings)
    time.sleep(5)
    pacs.add_modality("radnode", settings.ae_title, "127.0.0.1", settings.port)
    slice_mm = max(2.5, round(160.0 / args.slices, 2))  # the stack covers ~160 mm of head
    rows = []
    try:
        for r in range(args.rounds):
            glioma_state = "none"
            if not args.no_glioma:
                g = generate_glioma_study(work / f"glioma{r}", seed=900300 + r)
                before = set(pacs.studies())
                pacs.upload_dir(g.out_dir / "dicom")
                [gid] = set(pacs.studies()) - before
                pacs.store_to_modality("radnode", [gid])
                _wait(lambda: any(j.state not in ("queued", "pending")
                                  for j in _jobs(sessions, g.study.study_instance_uid)), 120, "the glioma job to start")
            h = generate_hemorrhage_study(work / f"head{r}", seed=910_100 + r, subtypes={"intraparenchymal"},
                                          slice_mm=slice_mm)
            before = set(pacs.studies())
            pacs.upload_dir(h.out_dir / "dicom")
            [hid] = set(pacs.studies()) - before
            pacs.store_to_modality("radnode", [hid])
            uid = h.study.study_instance_uid
            _wait(lambda: {"SEG", "SR"} <= _modalities(pacs, uid), 300, "SEG and SR of the head CT in Orthanc", poll=0.2)
            stored = time.time()
            with sessions() as s:
                last = s.get(StudyRow, uid).last_received_at
            [job] = _jobs(sessions, uid)
            if not args.no_glioma:
                [gjob] = _jobs(sessions, g.study.study_instance_uid)
                glioma_state = gjob.state
            rows.append({"round": r, "slices": h.study.instance_count, "latency_s": stored - last,
                         "job_created_s": job.created_at - last, "glioma_state": glioma_state})
            print(json.dumps(rows[-1]), flush=True)
            if not args.no_glioma:
                _wait(lambda: all(j.state in ("done", "failed") for j in _jobs(sessions, g.study.study_instance_uid)),
                      600, "the glioma job to finish")
    finally:
        for p in procs:
            p.terminate()
            p.wait(60)
        pacs.stop()
    lat = [r["latency_s"] for r in rows]
    print(f"\n{platform.node()} {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}; "
          f"{'with' if not args.no_glioma else 'without'} a concurrent glioma job")
    print(f"last image received → SEG and SR in Orthanc: median {statistics.median(lat):.1f} s, "
          f"max {max(lat):.1f} s over {len(lat)} rounds ({rows[0]['slices']} slices)")


if __name__ == "__main__":
    main()
