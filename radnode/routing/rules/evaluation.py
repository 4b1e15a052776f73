"""Evaluate validated rules on a study: a pure function of the
:class:`RoutingConfig` and the study-level :class:`StudyFacts`, returning a
:class:`RoutingDecision` that records per rule and condition why it applied."""

from __future__ import annotations

import copy
import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog

from radnode.routing.rules.schema import (
    RETURN_TO_SENDER,
    TRIGGERS,
    Conditions,
    DicomNode,
    RoutingConfig,
    Rule,
    Trigger,
    _compiled,
)

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class StudyFacts:
    """Study-level facts the rules are matched against.

    ``accession`` is carried for downstream use but kept out of ``repr`` so it
    never lands in logs by accident; no rule condition looks at it.
    """

    study_instance_uid: str
    modalities: frozenset[str] = frozenset()
    study_description: str | None = None
    body_part: str | None = None
    institution: str | None = None
    calling_ae: str | None = None
    called_ae: str | None = None
    trigger: Trigger = "auto"
    accession: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.trigger not in TRIGGERS:
            raise ValueError(f"trigger must be one of {TRIGGERS}, got {self.trigger!r}")
        object.__setattr__(self, "modalities", frozenset(m.strip().upper() for m in self.modalities if m))
        for name in ("calling_ae", "called_ae"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, value.strip())


@dataclass(frozen=True)
class ConditionResult:
    """One condition of one rule: did it hold, and why (human readable)."""

    condition: str
    matched: bool
    reason: str


@dataclass(frozen=True)
class RuleOutcome:
    """How one rule fared.

    ``matched`` says whether its conditions held; ``applied`` whether it
    contributed (a matching rule is not applied when disabled, when an earlier
    rule stopped evaluation, or when it is a fallback and something else
    matched).  ``note`` explains a non-applied match or the stop.
    """

    rule: str
    priority: int
    fallback: bool
    matched: bool
    applied: bool
    conditions: tuple[ConditionResult, ...]
    note: str = ""


@dataclass(frozen=True)
class DestinationRef:
    """A result destination; ``node`` is None when ``return_to_sender`` could
    not be resolved (the sender's AE is not in the caller's map), so the
    sender layer must resolve it from the association instead."""

    name: str
    node: DicomNode | None

    @property
    def symbolic(self) -> bool:
        return self.node is None


@dataclass(frozen=True)
class PlannedApplication:
    """An application to run, merged across the rules that asked for it."""

    name: str
    options: Mapping[str, Any]
    destinations: tuple[DestinationRef, ...]
    rules: tuple[str, ...]
    #: Destinations for critical findings only (the rules' ``notify``).
    notify: tuple[DestinationRef, ...] = ()
    #: False when a rule asking for it wants the quiet period (``complete_on_release: false``).
    complete_on_release: bool = True


@dataclass(frozen=True)
class RoutingDecision:
    """The outcome of :func:`evaluate` for one study."""

    study_instance_uid: str
    matched: bool
    applications: tuple[PlannedApplication, ...]
    outcomes: tuple[RuleOutcome, ...]
    stopped_by: str | None = None
    used_fallback: bool = False

    @property
    def matched_rules(self) -> tuple[RuleOutcome, ...]:
        """The rules that were applied, in evaluation order."""
        return tuple(o for o in self.outcomes if o.applied)

    @property
    def application_names(self) -> tuple[str, ...]:
        return tuple(a.name for a in self.applications)


def _check_conditions(cond: Conditions, facts: StudyFacts) -> list[ConditionResult]:
    """Evaluate each set condition in ``cond`` against ``facts``."""
    out: list[ConditionResult] = []
    have = sorted(facts.modalities)
    have_text = ", ".join(have) if have else "none"
    if cond.modalities is not None:
        hit = sorted(facts.modalities & set(cond.modalities))
        want = ", ".join(cond.modalities)
        out.append(
            ConditionResult(
                "modalities",
                bool(hit),
                f"study has {', '.join(hit)} (wanted any of {want})"
                if hit
                else f"study has {have_text}, none of {want}",
            )
        )
    if cond.modalities_all is not None:
        missing = [m for m in cond.modalities_all if m not in facts.modalities]
        want = ", ".join(cond.modalities_all)
        out.append(
            ConditionResult(
                "modalities_all",
                not missing,
                f"study has all of {want}" if not missing else f"study has {have_text}, lacks {', '.join(missing)}",
            )
        )
    for name in ("study_description", "body_part", "institution"):
        pattern = getattr(cond, name)
        if pattern is None:
            continue
        value = getattr(facts, name)
        if not value:
            out.append(ConditionResult(name, False, f"study has no {name.replace('_', ' ')} (pattern /{pattern}/)"))
            continue
        hit = _compiled(pattern).search(value) is not None
        verb = "matches" if hit else "does not match"
        out.append(ConditionResult(name, hit, f"{value!r} {verb} /{pattern}/"))
    for name in ("calling_ae", "called_ae"):
        patterns = getattr(cond, name)
        if patterns is None:
            continue
        value = getattr(facts, name)
        want = ", ".join(patterns)
        if not value:
            label = "calling AE title" if name == "calling_ae" else "called AE title"
            out.append(ConditionResult(name, False, f"no {label} known (wanted {want})"))
            continue
        which = next((p for p in patterns if fnmatch.fnmatchcase(value, p)), None)
        out.append(
            ConditionResult(
                name,
                which is not None,
                f"{value!r} matches {which!r}" if which is not None else f"{value!r} matches none of {want}",
            )
        )
    if cond.trigger is not None:
        hit = facts.trigger in cond.trigger
        want = ", ".join(cond.trigger)
        out.append(
            ConditionResult(
                "trigger",
                hit,
                f"trigger {facts.trigger!r} is one of {want}" if hit else f"trigger {facts.trigger!r} not in {want}",
            )
        )
    return out


def match_rule(rule: Rule, facts: StudyFacts) -> tuple[bool, tuple[ConditionResult, ...]]:
    """Whether ``rule``'s conditions hold for ``facts``, with reasons.

    All conditions are evaluated (not short-circuited) so an explanation can
    show every reason a rule failed, not just the first.
    """
    if rule.match is None:
        return True, (ConditionResult("match", True, "no conditions: matches every study"),)
    results = _check_conditions(rule.match, facts)
    if rule.match.exclude is not None:
        for res in _check_conditions(rule.match.exclude, facts):
            # An exclusion "passes" when its condition does NOT hold.
            results.append(
                ConditionResult(
                    f"not.{res.condition}",
                    not res.matched,
                    f"excluded: {res.reason}" if res.matched else f"not excluded: {res.reason}",
                )
            )
    if not results:
        results.append(ConditionResult("match", True, "empty match: matches every study"))
    return all(r.matched for r in results), tuple(results)


def resolve_destination(name: str, config: RoutingConfig, sender: DicomNode | None) -> DestinationRef:
    """A destination name as a node: ``return_to_sender`` is *sender* (None if unknown)."""
    return DestinationRef(name, sender if name == RETURN_TO_SENDER else config.destinations.get(name))


def default_destinations(config: RoutingConfig, sender: DicomNode | None) -> tuple[DestinationRef, ...]:
    """The file's default destinations, for applications no rule chose
    (a called AE bound to an application, a pull)."""
    return tuple(resolve_destination(name, config, sender) for name in config.defaults.destinations)


def evaluate(
    config: RoutingConfig,
    facts: StudyFacts,
    *,
    senders: Mapping[str, DicomNode] | None = None,
) -> RoutingDecision:
    """Decide which applications run on a study and where results go.

    ``senders`` maps a calling AE title to the node that results for
    ``return_to_sender`` should be sent to; when the calling AE is not in it
    the destination stays symbolic (``node is None``).
    """
    senders = senders or {}
    sender = senders.get(facts.calling_ae) if facts.calling_ae else None
    ordered = config.ordered_rules()
    evaluated = {id(rule): match_rule(rule, facts) for rule in ordered if rule.enabled}

    outcomes: dict[int, RuleOutcome] = {}
    applied: list[Rule] = []
    stopped_by: str | None = None
    used_fallback = False

    def run_pass(fallback: bool) -> None:
        nonlocal stopped_by
        for rule in ordered:
            if rule.fallback != fallback:
                continue
            if not rule.enabled:
                outcomes[id(rule)] = RuleOutcome(rule.name, rule.priority, rule.fallback, False, False, (), "disabled")
                continue
            ok, conds = evaluated[id(rule)]
            note = ""
            apply = ok and stopped_by is None
            if ok and stopped_by is not None:
                note = f"matched but skipped: rule {stopped_by!r} stopped evaluation"
            if apply:
                applied.append(rule)
                if config.rule_stops(rule):
                    stopped_by = rule.name
                    note = "stop: later rules skipped"
            outcomes[id(rule)] = RuleOutcome(rule.name, rule.priority, rule.fallback, ok, apply, conds, note)

    run_pass(fallback=False)
    if not applied:
        used_fallback = any(r.fallback and r.enabled for r in ordered)
        run_pass(fallback=True)
    else:
        for rule in ordered:
            if rule.fallback:
                ok, conds = evaluated.get(id(rule), (False, ()))
                note = "fallback not used: another rule matched" if rule.enabled else "disabled"
                outcomes[id(rule)] = RuleOutcome(rule.name, rule.priority, True, ok, False, conds, note)

    merged: dict[str, dict[str, Any]] = {}
    for rule in applied:
        dest_names = config.rule_destinations(rule)
        for app in rule.applications:
            entry = merged.setdefault(
                app.name, {"options": copy.deepcopy(app.options), "destinations": [], "rules": [], "notify": [], "on_release": True}
            )
            entry["on_release"] = entry["on_release"] and rule.complete_on_release
            for dest in rule.notify:
                if dest not in entry["notify"]:
                    entry["notify"].append(dest)
            if rule.name not in entry["rules"]:
                entry["rules"].append(rule.name)
            for dest in dest_names:
                if dest not in entry["destinations"]:
                    entry["destinations"].append(dest)

    applications = tuple(
        PlannedApplication(
            name=name,
            options=entry["options"],
            destinations=tuple(resolve_destination(d, config, sender) for d in entry["destinations"]),
            rules=tuple(entry["rules"]),
            notify=tuple(resolve_destination(d, config, sender) for d in entry["notify"]),
            complete_on_release=entry["on_release"],
        )
        for name, entry in merged.items()
    )
    decision = RoutingDecision(
        study_instance_uid=facts.study_instance_uid,
        matched=bool(applied),
        applications=applications,
        outcomes=tuple(outcomes[id(rule)] for rule in ordered),
        stopped_by=stopped_by,
        used_fallback=used_fallback and bool(applied),
    )
    log.debug(
        "routing.evaluated",
        study_instance_uid=facts.study_instance_uid,
        matched=decision.matched,
        rules=[o.rule for o in decision.matched_rules],
        applications=list(decision.application_names),
    )
    return decision
