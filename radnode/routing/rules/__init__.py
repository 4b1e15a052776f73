"""Routing rules: which AI applications run on a study, and where results go.

The rules live in an admin-edited YAML file (see ``config/routing.yaml`` for a
fully commented example).  Because a human edits this file on a production
node, every mistake must be reported as ``FILE:LINE:COLUMN: message`` so the
admin can jump straight to it, and a broken file must never half-apply.  That
drives the design here:

* The YAML is composed with a loader that keeps the source position of every
  mapping key and value and refuses duplicate keys (PyYAML silently keeps the
  last one, which hides copy-paste mistakes).
* The structure is a strict pydantic schema (``extra="forbid"`` everywhere, so
  a misspelt key is an error instead of a silently ignored condition), and
  each pydantic error location is mapped back to a line and column.
* Cross-references that pydantic cannot see (application names, destination
  names, duplicate rule names, per-application option schemas) are checked by
  a second pass over the same positions, so one ``check`` run lists every
  problem at once.

Evaluation (:func:`evaluate`) is a pure function of a validated
:class:`RoutingConfig` and the study-level :class:`StudyFacts`; it returns a
:class:`RoutingDecision` that records, per rule and per condition, why the
rule did or did not apply, so an admin can be shown the reasoning.

Semantics in brief (the example file documents them at length):

1. Rules are ordered by ``priority`` (higher first); ties keep file order.
2. Every condition in ``match`` must hold (AND).  An absent or empty
   ``match`` matches every study.  ``match.not`` lists exclusions: the rule is
   excluded if *any* condition inside ``not`` holds.
3. All matching rules apply, in order, until a matching rule has
   ``stop: true``; later rules are skipped.  ``defaults.multiple: false``
   makes ``stop`` default to true, i.e. "first match wins".
4. Rules with ``fallback: true`` are only considered when no ordinary rule
   matched; among themselves they follow the same order and stop semantics.
5. Applications named by several applied rules run once; the options come
   from the first applied rule that named the application, and the results go
   to the union of those rules' destinations.

The package: ``schema`` (the models), ``positions`` (YAML with positions),
``issues`` (the error reporter), ``checks`` (cross-checks), ``loading``
(parse/load), ``evaluation`` (evaluate). Everything public is re-exported
here, so callers import from ``radnode.routing.rules``.
"""

from radnode.routing.rules.checks import (
    DEFAULT_APPLICATIONS,
    KnownApplications,
)
from radnode.routing.rules.evaluation import (
    ConditionResult,
    DestinationRef,
    PlannedApplication,
    RoutingDecision,
    RuleOutcome,
    StudyFacts,
    default_destinations,
    evaluate,
    match_rule,
    resolve_destination,
)
from radnode.routing.rules.issues import (
    RoutingFileError,
    RoutingIssue,
)
from radnode.routing.rules.loading import (
    decode_rules,
    load_rules,
    parse_rules,
)
from radnode.routing.rules.schema import (
    RETURN_TO_SENDER,
    TRIGGERS,
    AePatterns,
    ApplicationRef,
    Conditions,
    Defaults,
    DestinationName,
    DestinationNames,
    DicomNode,
    Match,
    Modalities,
    NonEmpty,
    Regex,
    RoutingConfig,
    Rule,
    Trigger,
    Triggers,
)

__all__ = [
    "AePatterns",
    "ApplicationRef",
    "ConditionResult",
    "Conditions",
    "DEFAULT_APPLICATIONS",
    "Defaults",
    "DestinationName",
    "DestinationNames",
    "DestinationRef",
    "DicomNode",
    "KnownApplications",
    "Match",
    "Modalities",
    "NonEmpty",
    "PlannedApplication",
    "RETURN_TO_SENDER",
    "Regex",
    "RoutingConfig",
    "RoutingDecision",
    "RoutingFileError",
    "RoutingIssue",
    "Rule",
    "RuleOutcome",
    "StudyFacts",
    "TRIGGERS",
    "Trigger",
    "Triggers",
    "decode_rules",
    "default_destinations",
    "evaluate",
    "load_rules",
    "match_rule",
    "parse_rules",
    "resolve_destination",
]
