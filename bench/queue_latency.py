"""Time from a job's commit in the store to a worker starting it.

Measures both brokers in the same run: the embedded in-process queue and
RabbitMQ (127.0.0.1:5672 unless RADNODE_TEST_AMQP_URL says otherwise). A
worker pool (one consumer) runs a trivial analyzer; jobs are committed one
at a time, each after the previous one finished, and the latency is
``preprocessing_at - created_at`` as the job store records it — the path a
real job takes: commit → outbox → broker → consumer → claim.

    python bench/queue_latency.py [--jobs 50]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from radnode.analyzers.registry import Registry  # noqa: E402
from radnode.store import jobs as jobstore  # noqa: E402
from radnode.composition import WorkerPool, broker_for, make_outbox
from radnode.store.db import open_store  # noqa: E402
from radnode.settings import Settings  # noqa: E402
from tests.integration.jobs_support import spool_study  # noqa: E402


def run(broker_url: str | None, jobs: int, root: Path) -> list[float]:
    settings = Settings(
        data_dir=root / "data",
        queue={"broker_url": broker_url, "namespace": f"bench{uuid.uuid4().hex[:8]}", "outbox_interval": 1.0},
        analyzers={"plugins": ["tests.support.analyzers:CountingAnalyzer"]},
        logging={"level": "warning"},
    )
    engine, sessions = open_store(settings)
    registry = Registry(settings.analyzers.plugins)
    broker = broker_for(settings, ["count-test"])
    outbox = make_outbox(settings, sessions, broker)
    pool = WorkerPool(settings, sessions, broker, registry, ["count-test"], 1)
    outbox.start()
    pool.start()
    time.sleep(1.0)  # consumer attached
    latencies = []
    try:
        for i in range(jobs):
            study = spool_study(settings, root / f"s{i}", 1000 + i, series=("t1c", "flair"))
            with sessions.begin() as s:
                row, _ = jobstore.create_job(
                    s, jobstore.JobRequest(study.study_instance_uid, "count-test", "1.0", {
                        "t1c": study.by_label("t1c").series_instance_uid,
                        "flair": study.by_label("flair").series_instance_uid,
                    })
                )
                job_id = row.job_id
            outbox.kick()  # what the router does after committing jobs
            deadline = time.monotonic() + 30
            while True:
                with sessions() as s:
                    r = jobstore.get_job(s, job_id)
                    if r.state == "done":
                        latencies.append(r.preprocessing_at - r.created_at)
                        break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"job {job_id} stuck in {r.state}")
                time.sleep(0.005)
    finally:
        pool.stop(10)
        outbox.stop()
        broker.close()
        engine.dispose()
    return latencies


def main() -> None:
    from radnode.logconfig import configure_logging

    configure_logging("warning", "console")
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--jobs", type=int, default=50)
    args = ap.parse_args()
    os.environ.setdefault("PYTHONPATH", str(Path(__file__).resolve().parents[1]))
    amqp = os.environ.get("RADNODE_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
    print(f"radnode queue latency — {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.platform()}, {os.cpu_count()} CPUs, {args.jobs} jobs each")
    print(f"{'broker':<10} {'median ms':>10} {'p95 ms':>10} {'max ms':>10}")
    for name, url in (("embedded", None), ("rabbitmq", amqp)):
        with tempfile.TemporaryDirectory() as tmp:
            lat = sorted(x * 1000 for x in run(url, args.jobs, Path(tmp)))
        p95 = lat[min(len(lat) - 1, int(round(0.95 * (len(lat) - 1))))]
        print(f"{name:<10} {statistics.median(lat):>10.1f} {p95:>10.1f} {lat[-1]:>10.1f}")


if __name__ == "__main__":
    main()
