"""The route stage: a completed study becomes job requests.

For each completed study generation: read the series headers from the spool,
evaluate the routing rules in force (hot-reloaded), classify every series,
select each application's inputs, and record — in one transaction — the
routing decision and one job per application (``queued``, or ``needs-input``
naming the missing role). Re-delivery of the same generation is a no-op, and
job identities make a re-routed study map onto its existing jobs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import structlog

from radnode.uids import patient_key
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from radnode.analyzers.registry import Registry, RegistryError
from radnode.store import jobs as jobstore
from radnode.model.jobs import Destination, Trigger
from radnode.routing.pulled import PullRouting, mark_routed, pull_for_study
from radnode.routing.classifier import SeriesClassifier
from radnode.routing.rules import DicomNode, PlannedApplication, RoutingConfig, RoutingDecision, StudyFacts, default_destinations, evaluate
from radnode.routing.rules_commands import format_decision
from radnode.model.analysis import ApplicationRoles
from radnode.routing.selection import Selection, select_series
from radnode.routing.series_index import SeriesSummary, scan_series
from radnode.settings import Settings
from radnode.routing.completeness import release_readiness
from radnode.routing.returned import forward_reidentified, original_study
from radnode.store.studies import ReleasedStudy, StudyCompleted

log = structlog.get_logger(__name__)


@dataclass
class ApplicationPlan:
    application: PlannedApplication
    roles: ApplicationRoles
    selection: Selection
    model_version: str
    request: jobstore.JobRequest


@dataclass
class StudyPlan:
    """Everything routing decided about one study (also what ``explain`` shows)."""

    facts: StudyFacts
    decision: RoutingDecision
    summaries: list[SeriesSummary]
    predictions: dict[str, Any]
    applications: list[ApplicationPlan] = field(default_factory=list)


def study_facts(summaries: list[SeriesSummary], study_uid: str, calling_ae: str, called_ae: str, trigger: str) -> StudyFacts:
    """Study-level facts for the rules, from the series headers."""
    first = summaries[0].header if summaries else None

    def tag(name: str) -> str:
        for s in summaries:
            value = s.header.get(name)
            if value not in (None, ""):
                return str(value)
        return ""

    return StudyFacts(
        study_instance_uid=study_uid,
        modalities=frozenset(s.modality for s in summaries if s.modality),
        study_description=tag("StudyDescription"),
        body_part=tag("BodyPartExamined"),
        institution=tag("InstitutionName"),
        calling_ae=calling_ae,
        called_ae=called_ae,
        trigger=trigger,  # type: ignore[arg-type]
        accession=str(first.get("AccessionNumber", "") or "") if first is not None else "",
    )


class Router:
    """Implements the listener's ``StudySink``: completed study → jobs."""

    def __init__(
        self,
        settings: Settings,
        sessions: sessionmaker[Session],
        rules: Callable[[], RoutingConfig],
        classifier: SeriesClassifier,
        registry: Registry,
        on_jobs: Callable[[], None] = lambda: None,
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.rules = rules
        self.classifier = classifier
        self.registry = registry
        self.on_jobs = on_jobs
        self.bound_apps = {c.ae_title: c.application for c in settings.called_aes() if c.application}
        self.senders: Mapping[str, DicomNode] = {
            p.ae_title: DicomNode(ae_title=p.ae_title, host=p.host, port=p.port) for p in settings.peers
        }

    # -- planning (pure: no writes) -------------------------------------------

    def plan(self, study_dir: Path, *, study_uid: str | None = None, calling_ae: str = "", called_ae: str = "", trigger: str | None = None, pull: PullRouting | None = None) -> StudyPlan:
        summaries = scan_series(study_dir)
        uid = study_uid or (summaries[0].study_instance_uid if summaries else study_dir.name)
        bound_app = self.bound_apps.get(called_ae)
        trig = "pull" if pull is not None else trigger or ("manual" if bound_app else "auto")
        facts = study_facts(summaries, uid, calling_ae, called_ae, trig)
        config = self.rules()  # read once: a hot reload mid-plan must not mix two files
        decision = evaluate(config, facts, senders=self.senders)
        planned = list(decision.applications)
        if pull is not None:
            # A pull asked for exactly one application with its options: the
            # rules' choice of applications does not apply, their default
            # destinations do (return_to_sender = the PACS pulled from).
            planned = [pull.planned(config)]
        elif bound_app and bound_app not in {p.name for p in planned}:
            # "Send to AI node" by AE title asks for this application explicitly.
            sender = self.senders.get(facts.calling_ae) if facts.calling_ae else None
            planned.append(PlannedApplication(name=bound_app, options={}, destinations=default_destinations(config, sender), rules=(f"called AE {called_ae}",)))
        predictions = {}
        if summaries:
            for summary, pred in zip(summaries, self.classifier.predict(summaries)):
                predictions[summary.series_instance_uid] = pred
        plan = StudyPlan(facts=facts, decision=decision, summaries=summaries, predictions=predictions)
        for app in planned:
            plan.applications.append(self._plan_application(app, facts, summaries, predictions))
        return plan

    def _plan_application(self, app: PlannedApplication, facts: StudyFacts, summaries: list[SeriesSummary], predictions: dict[str, Any]) -> ApplicationPlan:
        error = None
        try:
            model_version = self.registry.get(app.name).spec.model_version
        except RegistryError as exc:
            model_version = "not-installed"
            error = str(exc)
        roles = self.registry.roles(app.name)
        selection = select_series(roles, summaries, [predictions[s.series_instance_uid] for s in summaries], threshold=self.settings.routing.confidence_threshold)
        chosen = {role: c.series_instance_uid for role, c in selection.chosen.items()}
        flags = [f"confirm-{role}" for role, c in selection.chosen.items() if c.needs_confirmation]
        destinations: list[Destination] = []
        named = {ref.name for ref in app.destinations}
        # notify destinations already receiving every result need no second copy.
        for ref, notify in [(r, False) for r in app.destinations] + [(r, True) for r in app.notify if r.name not in named]:
            if ref.node is None:
                flags.append(f"unresolved-destination:{ref.name}")
                continue
            destinations.append(job_destination(ref.name, ref.node, notify=notify))
        needs_input = None
        if not selection.complete:
            parts = []
            for missing in selection.missing:
                closest = ", ".join(f"{c[1] or c[0]} ({c[2]:.2f})" for c in missing.closest_candidates[:3]) or "no candidates"
                parts.append(f"missing role {missing.role!r}; closest: {closest}")
            needs_input = "; ".join(parts)
        request = jobstore.JobRequest(
            study_instance_uid=facts.study_instance_uid,
            application=app.name,
            model_version=model_version,
            series=chosen,
            trigger=Trigger(facts.trigger),
            accession=facts.accession or "",
            options=dict(app.options),
            destinations=destinations,
            selection={
                role: {"series_instance_uid": c.series_instance_uid, "label": c.label, "probability": round(c.probability, 4), "needs_confirmation": c.needs_confirmation}
                for role, c in selection.chosen.items()
            },
            needs_input=needs_input,
            error=error,
            flags=flags,
            patient_key=patient_key(summaries[0].header) if summaries else None,
            study_date=(str(summaries[0].header.get("StudyDate", "") or "")[:8] or None) if summaries else None,
            priority=self.registry.priority(app.name),
        )
        return ApplicationPlan(app, roles, selection, model_version, request)

    # -- the sink --------------------------------------------------------------

    def ready_on_release(self, study: ReleasedStudy) -> str | None:
        """Study assembly's completeness check: a reason to start this released study now, or None."""
        if not self.settings.complete_on_release_for(study.called_ae):
            return None
        study_dir = self.settings.spool_dir / study.study_instance_uid
        pull = pull_for_study(self.settings, self.sessions, study.study_instance_uid)
        plan = self.plan(study_dir, study_uid=study.study_instance_uid, calling_ae=study.calling_ae, called_ae=study.called_ae, pull=pull)
        reason = release_readiness(plan)
        log.info("completeness on release", study_uid=study.study_instance_uid, ready=reason is not None)
        return reason

    def study_completed(self, event: StudyCompleted) -> None:
        study_dir = self.settings.spool_dir / event.study_instance_uid
        with self.sessions() as session:
            seen = session.scalars(
                select(jobstore.RoutingDecisionRow.id).where(
                    jobstore.RoutingDecisionRow.study_instance_uid == event.study_instance_uid,
                    jobstore.RoutingDecisionRow.generation == event.generation,
                )
            ).first()
        if seen is not None:
            return
        original = original_study(self.sessions, event.study_instance_uid)
        if original is not None:  # a result coming back from an external analysis, not a study to analyse
            outcome = forward_reidentified(self.settings, self.sessions, study_dir, event.study_instance_uid, original)
            with self.sessions.begin() as session:
                jobstore.record_routing(session, event.study_instance_uid, event.generation, False, [], outcome.explanation())
            return
        pull = pull_for_study(self.settings, self.sessions, event.study_instance_uid)
        plan = self.plan(study_dir, study_uid=event.study_instance_uid, calling_ae=event.calling_ae, called_ae=event.called_ae, pull=pull)
        created = 0
        with self.sessions.begin() as session:
            jobstore.record_routing(
                session,
                event.study_instance_uid,
                event.generation,
                bool(plan.applications),
                [a.application.name for a in plan.applications],
                format_decision(plan.decision),
            )
            jobs = []
            for app in plan.applications:
                job, new = jobstore.create_job(session, app.request)
                jobs.append((job.job_id, job.state))
                created += int(new)
            if pull is not None:
                mark_routed(session, pull.pull_id, jobs)
        log.info(
            "study routed",
            study_uid=event.study_instance_uid,
            generation=event.generation,
            trigger=plan.facts.trigger,
            matched=bool(plan.applications),
            applications=[a.application.name for a in plan.applications],
            new_jobs=created,
        )
        if created:
            self.on_jobs()


def job_destination(name: str, node: DicomNode, *, notify: bool = False) -> Destination:
    """A routing file's destination as the job's (queue contract) destination."""
    if node.url:
        return Destination(name=name, url=node.url, notify=notify)
    if node.email is not None:
        return Destination(name=name, email=tuple(node.email), notify=notify)
    if node.hl7:
        return Destination(name=name, hl7=node.hl7, notify=notify)
    if node.fhir:
        return Destination(name=name, fhir=node.fhir, notify=notify)
    if node.webhook:
        return Destination(name=name, webhook=node.webhook, notify=notify)
    return Destination(name=name, ae_title=node.ae_title or "", host=node.host or "", port=node.port, notify=notify, tls=node.tls, external=node.external)
