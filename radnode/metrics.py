"""Prometheus metrics, computed from the durable state on each scrape.

Counting from the store (not from in-process counters) keeps the numbers
right when the listener, workers and web app are separate processes.
"""

from __future__ import annotations

from typing import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from radnode.store.deliveries import job_deliveries
from radnode.store.jobs import JobRow
from radnode.store.studies import InstanceRow, StudyRow

STAGE_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600)
_STAGES = ("preprocessing", "inferring", "writing", "sending")


class StoreCollector(Collector):
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions

    def collect(self) -> Iterator[object]:
        with self._sessions() as s:
            instances = s.scalar(select(func.count()).select_from(InstanceRow)) or 0
            studies = s.execute(select(StudyRow.state, func.count()).group_by(StudyRow.state)).all()
            jobs = s.execute(select(JobRow.state, JobRow.application, func.count()).group_by(JobRow.state, JobRow.application)).all()
            times = s.execute(
                select(JobRow.application, JobRow.preprocessing_at, JobRow.inferring_at, JobRow.writing_at, JobRow.sending_at, JobRow.finished_at)
                .where(JobRow.state == "done")
                .order_by(JobRow.finished_at.desc())
                .limit(5000)
            ).all()
            critical = dict(
                s.execute(select(JobRow.application, func.count()).where(JobRow.critical.is_(True)).group_by(JobRow.application)).all()
            )
            sends = s.execute(
                select(JobRow.destinations_json, JobRow.sends_json).where(JobRow.destinations_json != "[]").order_by(JobRow.created_at.desc()).limit(5000)
            ).all()
        c = CounterMetricFamily("radnode_instances_received", "Instances stored by the listener")
        c.add_metric([], instances)
        yield c
        g = GaugeMetricFamily("radnode_studies", "Studies by assembly state", labels=["state"])
        for state, n in studies:
            g.add_metric([state], n)
        yield g
        g = GaugeMetricFamily("radnode_jobs", "Jobs by state and application", labels=["state", "application"])
        for state, app, n in jobs:
            g.add_metric([state, app], n)
        yield g
        h = HistogramMetricFamily("radnode_stage_duration_seconds", "Duration of each job stage", labels=["stage", "application"])
        by_key: dict[tuple[str, str], list[float]] = {}
        for app, pre, inf, wri, sen, fin in times:
            stamps = {"preprocessing": pre, "inferring": inf, "writing": wri, "sending": sen, "finished": fin}
            for stage in _STAGES:
                start = stamps[stage]
                end = next((stamps[n] for n in _following(stage) if stamps[n] is not None), None)
                if start is not None and end is not None:
                    by_key.setdefault((stage, app), []).append(max(end - start, 0.0))
        for (stage, app), values in by_key.items():
            buckets = [(str(b), sum(1 for v in values if v <= b)) for b in STAGE_BUCKETS] + [("+Inf", len(values))]
            h.add_metric([stage, app], buckets, sum(values))
        yield h
        # Deliveries per destination kind and outcome (e-mail, HL7, FHIR, DICOM, DICOMweb).
        g = GaugeMetricFamily("radnode_deliveries", "Result deliveries by destination kind and state (recent jobs)", labels=["kind", "state", "notify"])
        counts: dict[tuple[str, str, str], int] = {}
        for destinations_json, sends_json in sends:
            for d in job_deliveries(destinations_json, sends_json):
                key = (d["kind"], d["state"], "true" if d["notify"] else "false")
                counts[key] = counts.get(key, 0) + 1
        for (kind, state, notify), n in sorted(counts.items()):
            g.add_metric([kind, state, notify], n)
        yield g
        # Triage (issue 16): results with a present critical finding, per application (0 for
        # applications with jobs but none, so an alert on increase() has a series from the start).
        # Counted from the store: a re-run that no longer finds it takes the job off the count.
        c = CounterMetricFamily("radnode_critical_results", "Jobs whose result has a present critical finding", labels=["application"])
        for app in sorted({app for _, app, _ in jobs} | set(critical)):
            c.add_metric([app], critical.get(app, 0))
        yield c
        # Queued jobs are the ones waiting for a worker, whichever broker carries them.
        g = GaugeMetricFamily("radnode_queue_depth", "Jobs waiting for a worker, per application", labels=["application"])
        for state, app, n in jobs:
            if state == "queued":
                g.add_metric([app], n)
        yield g


def _following(stage: str) -> list[str]:
    order = ["preprocessing", "inferring", "writing", "sending", "finished"]
    return order[order.index(stage) + 1 :]


def make_registry(sessions: sessionmaker[Session]) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(StoreCollector(sessions))
    return registry
