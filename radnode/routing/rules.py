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
"""

from __future__ import annotations

import copy
import difflib
import fnmatch
import functools
import re
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import structlog
import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    create_model,
    model_validator,
)

from radnode.analyzers.registry import BUILTIN_APPLICATIONS
from radnode.model.validation import format_loc

log = structlog.get_logger(__name__)

#: Applications a file may name when the caller passes no registry: the
#: declared built-ins (``radnode.analyzers.registry`` holds the one list).
DEFAULT_APPLICATIONS: frozenset[str] = frozenset(BUILTIN_APPLICATIONS)

#: The built-in destination: send results back to the AE that sent the study.
RETURN_TO_SENDER = "return_to_sender"

Trigger = Literal["auto", "manual", "pull"]
TRIGGERS: tuple[str, ...] = typing.get_args(Trigger)

#: An application registry: names only, or names mapped to an option schema.
#: A schema is either a pydantic model class, a mapping of option name to
#: type (every option optional, unknown options refused), or ``None`` (options
#: not checked).
KnownApplications = Mapping[str, Any] | Iterable[str]

# Refuse files whose aliases expand to absurd sizes (a "billion laughs" file
# would otherwise hang validation and the reload thread).
_MAX_NODES = 100_000


# --------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------


@dataclass(frozen=True, order=True)
class RoutingIssue:
    """One problem in a routing file, positioned for an editor (1-based)."""

    file: str
    line: int
    column: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}: {self.message}"


class RoutingFileError(Exception):
    """A routing file could not be read or is invalid; carries every issue."""

    def __init__(self, issues: Iterable[RoutingIssue]) -> None:
        self.issues: list[RoutingIssue] = sorted(set(issues))
        super().__init__("\n".join(str(issue) for issue in self.issues))


# --------------------------------------------------------------------------
# Schema
# --------------------------------------------------------------------------


def _as_list(value: Any) -> Any:
    """Let admins write ``calling_ae: PACS1`` for a one-element list."""
    if isinstance(value, str):
        return [value]
    return value


def _check_regex(value: str) -> str:
    """Compile at validation so a bad regex fails ``check``, not a study."""
    try:
        _compiled(value)
    except re.error as exc:
        where = f" at position {exc.pos}" if exc.pos is not None else ""
        raise ValueError(f"invalid regular expression {value!r}: {exc.msg}{where}") from None
    return value


def _strip_upper(values: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(v.strip().upper() for v in values)


def _strip_all(values: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(v.strip() for v in values)


@functools.lru_cache(maxsize=1024)
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


Regex = Annotated[str, AfterValidator(_check_regex)]
NonEmpty = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]
Modalities = Annotated[
    tuple[Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=16)], ...],
    BeforeValidator(_as_list),
    AfterValidator(_strip_upper),
]
AePatterns = Annotated[
    tuple[Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)], ...],
    BeforeValidator(_as_list),
    AfterValidator(_strip_all),
]
Triggers = Annotated[tuple[Trigger, ...], BeforeValidator(_as_list)]
DestinationName = Annotated[
    str, StringConstraints(strip_whitespace=True, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
]
DestinationNames = Annotated[tuple[DestinationName, ...], BeforeValidator(_as_list)]


class _Strict(BaseModel):
    """Base: unknown keys are errors and parsed rules are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class DicomNode(_Strict):
    """A node results are sent to: a DICOM C-STORE SCP (``ae_title``, ``host``,
    ``port``) or a DICOMweb service (``url``, stored by STOW-RS, PS3.18 10.5)."""

    ae_title: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=16)] | None = None
    host: NonEmpty | None = None
    port: Annotated[int, Field(ge=1, le=65535)] | None = None
    url: Annotated[str, StringConstraints(strip_whitespace=True, pattern=r"^https?://\S+$")] | None = None
    description: str = ""

    @model_validator(mode="after")
    def _one_kind(self) -> "DicomNode":
        dimse = [self.ae_title, self.host, self.port]
        if self.url is not None:
            if any(v is not None for v in dimse):
                raise ValueError("a destination is either a DICOMweb url or ae_title/host/port, not both")
        elif any(v is None for v in dimse):
            missing = [n for n, v in zip(("ae_title", "host", "port"), dimse) if v is None]
            raise ValueError(f"a DICOM destination needs ae_title, host and port (missing: {', '.join(missing)}), or a DICOMweb url")
        return self

    @property
    def is_dicomweb(self) -> bool:
        return self.url is not None


class Conditions(_Strict):
    """Study-level conditions; every condition given must hold (AND)."""

    modalities: Modalities | None = None
    modalities_all: Modalities | None = None
    study_description: Regex | None = None
    body_part: Regex | None = None
    institution: Regex | None = None
    calling_ae: AePatterns | None = None
    called_ae: AePatterns | None = None
    trigger: Triggers | None = None


class Match(Conditions):
    """Conditions plus ``not``: exclusions, any one of which rejects the rule."""

    exclude: Conditions | None = Field(default=None, alias="not")


class ApplicationRef(_Strict):
    """An application a rule asks for, with its per-rule options."""

    name: NonEmpty
    options: dict[str, Any] = Field(default_factory=dict)


def _app_shorthand(value: Any) -> Any:
    """Allow ``applications: [glioma]`` as shorthand for ``[{name: glioma}]``."""
    if isinstance(value, (list, tuple)):
        return [{"name": item} if isinstance(item, str) else item for item in value]
    return value


class Rule(_Strict):
    """One routing rule.  ``stop=None`` means "inherit from defaults"."""

    name: NonEmpty
    description: str = ""
    enabled: bool = True
    priority: int = 0
    fallback: bool = False
    match: Match | None = None
    applications: Annotated[tuple[ApplicationRef, ...], BeforeValidator(_app_shorthand)] = ()
    destinations: DestinationNames | None = None
    stop: bool | None = None


class Defaults(_Strict):
    """Values every rule inherits unless it sets its own."""

    destinations: DestinationNames = (RETURN_TO_SENDER,)
    multiple: bool = True


class RoutingConfig(_Strict):
    """A validated routing file.  Build it with :func:`load_rules`/:func:`parse_rules`."""

    version: Literal[1]
    defaults: Defaults = Field(default_factory=Defaults)
    destinations: dict[DestinationName, DicomNode] = Field(default_factory=dict)
    rules: tuple[Rule, ...] = ()

    @model_validator(mode="before")
    @classmethod
    def _drop_extension_keys(cls, data: Any) -> Any:
        """Top-level ``x-...`` keys hold YAML anchors for reuse (as in
        docker-compose); they are not part of the schema."""
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if not (isinstance(k, str) and k.startswith("x-"))}
        return data

    def ordered_rules(self) -> list[Rule]:
        """Rules in evaluation order: priority descending, then file order."""
        return sorted(self.rules, key=lambda r: -r.priority)  # sort is stable

    def rule_stops(self, rule: Rule) -> bool:
        """Whether a matching ``rule`` ends evaluation (explicit or default)."""
        return rule.stop if rule.stop is not None else not self.defaults.multiple

    def rule_destinations(self, rule: Rule) -> tuple[str, ...]:
        """Destination names of ``rule`` after merging defaults."""
        return rule.destinations if rule.destinations is not None else self.defaults.destinations


# --------------------------------------------------------------------------
# YAML with positions
# --------------------------------------------------------------------------

_MERGE_TAG = "tag:yaml.org,2002:merge"


@dataclass(frozen=True)
class _Pos:
    """Where a path's key and value start (0-based, as PyYAML marks are)."""

    key: yaml.Mark | None
    value: yaml.Mark


class _Loader(yaml.SafeLoader):
    """SafeLoader that records duplicate mapping keys instead of hiding them."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.duplicates: list[tuple[Any, yaml.Mark, yaml.Mark]] = []

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, yaml.Mark] = {}
        for key_node, _ in node.value:
            if key_node.tag == _MERGE_TAG:
                continue  # merged keys may legitimately be overridden
            try:
                key = self.construct_object(key_node, deep=True)
                hash(key)
            except Exception:  # noqa: BLE001 - the base class reports it with a mark
                continue
            if key in seen:
                self.duplicates.append((key, key_node.start_mark, seen[key]))
            else:
                seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep=deep)


def _index_positions(loader: _Loader, root: yaml.Node) -> dict[tuple[Any, ...], _Pos]:
    """Map every path (as pydantic spells ``loc``) to its source position."""
    index: dict[tuple[Any, ...], _Pos] = {(): _Pos(None, root.start_mark)}
    budget = [_MAX_NODES]
    active: set[int] = set()

    def walk(node: yaml.Node, path: tuple[Any, ...]) -> None:
        budget[0] -= 1
        if budget[0] < 0 or id(node) in active:
            return
        active.add(id(node))
        try:
            if isinstance(node, yaml.MappingNode):
                for key_node, value_node in node.value:
                    if not isinstance(key_node, yaml.ScalarNode):
                        continue
                    key = loader.construct_object(key_node, deep=True)
                    index[path + (key,)] = _Pos(key_node.start_mark, value_node.start_mark)
                    walk(value_node, path + (key,))
            elif isinstance(node, yaml.SequenceNode):
                for i, item in enumerate(node.value):
                    index[path + (i,)] = _Pos(None, item.start_mark)
                    walk(item, path + (i,))
        finally:
            active.discard(id(node))

    walk(root, ())
    if budget[0] < 0:
        raise _TooComplex(root.start_mark)
    return index


class _TooComplex(Exception):
    def __init__(self, mark: yaml.Mark) -> None:
        self.mark = mark


def _yaml_message(exc: yaml.MarkedYAMLError) -> str:
    problem = exc.problem or "invalid YAML"
    if "'\\t'" in problem:
        return "tab character found; YAML indentation and separators must use spaces"
    if exc.context and exc.context_mark is not None and exc.problem_mark is not None:
        ctx_line = exc.context_mark.line + 1
        return f"YAML syntax error: {problem} ({exc.context} started on line {ctx_line})"
    return f"YAML syntax error: {problem}"


# --------------------------------------------------------------------------
# Loading and validation
# --------------------------------------------------------------------------


def _normalize_known(known: KnownApplications) -> dict[str, type[BaseModel] | None]:
    """Turn the caller's application registry into name -> options model."""
    if isinstance(known, str):
        known = [known]
    if not isinstance(known, Mapping):
        return {str(name): None for name in known}
    out: dict[str, type[BaseModel] | None] = {}
    for name, schema in known.items():
        if schema is None:
            out[name] = None
        elif isinstance(schema, type) and issubclass(schema, BaseModel):
            out[name] = schema
        elif isinstance(schema, Mapping):
            fields: dict[str, Any] = {opt: (typ | None, None) for opt, typ in schema.items()}
            out[name] = create_model(  # type: ignore[call-overload]
                f"{name}_options", __config__=ConfigDict(extra="forbid"), **fields
            )
        else:
            raise TypeError(f"option schema for {name!r} must be a model, a mapping or None")
    return out


class _Reporter:
    """Collects issues, turning ``loc`` paths into file positions."""

    def __init__(self, file: str, index: Mapping[tuple[Any, ...], _Pos]) -> None:
        self.file = file
        self.index = index
        self.issues: list[RoutingIssue] = []

    def position(self, loc: tuple[Any, ...], *, at_key: bool = False) -> tuple[int, int]:
        """Deepest known prefix of ``loc``; missing keys point at their parent."""
        if loc and loc[-1] == "[key]":
            loc, at_key = loc[:-1], True
        for cut in range(len(loc), -1, -1):
            pos = self.index.get(tuple(loc[:cut]))
            if pos is None:
                continue
            mark = pos.key if (at_key and cut == len(loc) and pos.key is not None) else pos.value
            return mark.line + 1, mark.column + 1
        return 1, 1

    def add(
        self,
        loc: tuple[Any, ...],
        message: str,
        *,
        at_key: bool = False,
        label: tuple[Any, ...] | None = None,
    ) -> None:
        line, column = self.position(loc, at_key=at_key)
        where = format_loc(loc if label is None else label)
        self.issues.append(
            RoutingIssue(self.file, line, column, f"{where}: {message}" if where else message)
        )


def _allowed_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """Keys ``model`` accepts at ``loc`` (for "did you mean" hints)."""
    current: Any = model
    for part in loc:
        current = _strip_type(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            found = None
            for fname, finfo in current.model_fields.items():
                if (finfo.alias or fname) == part:
                    found = finfo.annotation
            if found is None:
                return []
            current = found
        elif typing.get_origin(current) in (tuple, list):
            current = typing.get_args(current)[0]
        elif typing.get_origin(current) is dict:
            current = typing.get_args(current)[1]
        else:
            return []
    current = _strip_type(current)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return [finfo.alias or fname for fname, finfo in current.model_fields.items()]
    return []


def _strip_type(tp: Any) -> Any:
    """Peel ``Annotated`` and ``X | None`` so the walk reaches the real type."""
    while True:
        origin = typing.get_origin(tp)
        if origin is Annotated:
            tp = typing.get_args(tp)[0]
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            if len(args) != 1:
                return tp
            tp = args[0]
        else:
            return tp


def _pydantic_issues(
    exc: ValidationError,
    rep: _Reporter,
    *,
    prefix: tuple[Any, ...] = (),
    model: type[BaseModel] = RoutingConfig,
) -> None:
    for err in exc.errors(include_url=False):
        loc = prefix + tuple(err["loc"])
        kind = err["type"]
        msg = err["msg"]
        if kind == "extra_forbidden":
            key = loc[-1]
            allowed = _allowed_keys(model, tuple(err["loc"])[:-1])
            text = f"unknown key {key!r}"
            close = difflib.get_close_matches(str(key), allowed, n=1)
            if close:
                text += f"; did you mean {close[0]!r}?"
            if allowed:
                text += f" (allowed: {', '.join(allowed)})"
            rep.add(loc, text, at_key=True)
            continue
        if kind == "missing":
            rep.add(loc, f"missing required key {loc[-1]!r}", label=loc[:-1])
            continue
        if kind == "value_error" and msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        elif isinstance(err.get("input"), (str, int, float, bool)) and kind != "string_pattern_mismatch":
            msg = f"{msg}, got {err['input']!r}"
        if kind == "string_type" and isinstance(err.get("input"), bool | None):
            msg += " (YAML reads unquoted yes/no/on/off/true/false/null as non-strings; quote the value)"
        if kind == "string_pattern_mismatch":
            msg = f"invalid name {err.get('input')!r}: use letters, digits, '_', '.', '-'"
        rep.add(loc, msg)


def _cross_check(data: Any, known: Mapping[str, type[BaseModel] | None], rep: _Reporter) -> None:
    """Checks pydantic cannot do alone: names that refer to other things.

    Works on the raw data and tolerates wrong shapes (pydantic reports those),
    so every problem in the file is listed in one go.
    """
    if not isinstance(data, dict):
        return
    dests = data.get("destinations")
    defined: set[str] = set()
    if isinstance(dests, dict):
        defined = {k for k in dests if isinstance(k, str)}
        if RETURN_TO_SENDER in defined:
            rep.add(
                ("destinations", RETURN_TO_SENDER),
                f"{RETURN_TO_SENDER!r} is built in and cannot be redefined",
                at_key=True,
            )
    valid = defined | {RETURN_TO_SENDER}

    def check_dests(loc: tuple[Any, ...], value: Any) -> None:
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list):
            return
        for i, name in enumerate(items):
            if isinstance(name, str) and name.strip() not in valid:
                close = difflib.get_close_matches(name, sorted(valid), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                item_loc = loc + (i,) if not isinstance(value, str) else loc
                rep.add(
                    item_loc,
                    f"unknown destination {name!r}{hint} (defined: {', '.join(sorted(valid))})",
                )

    defaults = data.get("defaults")
    if isinstance(defaults, dict) and "destinations" in defaults:
        check_dests(("defaults", "destinations"), defaults["destinations"])

    rules = data.get("rules")
    if not isinstance(rules, list):
        return
    names: dict[str, int] = {}
    for r, rule in enumerate(rules):
        if not isinstance(rule, dict):
            continue
        name = rule.get("name")
        if isinstance(name, str):
            key = name.strip()
            if key in names:
                first_line = rep.position(("rules", names[key], "name"))[0]
                rep.add(("rules", r, "name"), f"duplicate rule name {key!r} (first used on line {first_line})")
            else:
                names[key] = r
        if "destinations" in rule:
            check_dests(("rules", r, "destinations"), rule["destinations"])
        apps = rule.get("applications")
        if not isinstance(apps, list):
            continue
        for a, app in enumerate(apps):
            app_name = app if isinstance(app, str) else app.get("name") if isinstance(app, dict) else None
            if not isinstance(app_name, str):
                continue
            app_loc: tuple[Any, ...] = ("rules", r, "applications", a)
            name_loc = app_loc if isinstance(app, str) else app_loc + ("name",)
            if app_name.strip() not in known:
                close = difflib.get_close_matches(app_name, sorted(known), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                rep.add(
                    name_loc,
                    f"unknown application {app_name!r}{hint} (known: {', '.join(sorted(known))})",
                )
                continue
            schema = known[app_name.strip()]
            options = app.get("options") if isinstance(app, dict) else None
            if schema is not None and isinstance(options, dict):
                try:
                    schema.model_validate(options)
                except ValidationError as exc:
                    _pydantic_issues(exc, rep, prefix=app_loc + ("options",), model=schema)


def parse_rules(
    text: str,
    known_applications: KnownApplications = DEFAULT_APPLICATIONS,
    *,
    file: str = "<string>",
) -> RoutingConfig:
    """Validate routing YAML given as text; raise :class:`RoutingFileError`.

    This is the single entry point used by :func:`load_rules`, the reload
    watcher and the CLI, so they all report identical positions.
    """
    known = _normalize_known(known_applications)
    loader = _Loader(text)
    try:
        try:
            root = loader.get_single_node()
            if root is None:
                raise RoutingFileError(
                    [RoutingIssue(file, 1, 1, "file is empty; expected a mapping with 'version' and 'rules'")]
                )
            data = loader.construct_document(root)
            index = _index_positions(loader, root)
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        raise RoutingFileError([RoutingIssue(file, line, col, _yaml_message(exc))]) from None
    except yaml.YAMLError as exc:  # e.g. reader errors without marks
        raise RoutingFileError([RoutingIssue(file, 1, 1, f"YAML error: {exc}")]) from None
    except _TooComplex as exc:
        raise RoutingFileError(
            [RoutingIssue(file, exc.mark.line + 1, exc.mark.column + 1, "file too complex (aliases expand too far)")]
        ) from None

    rep = _Reporter(file, index)
    for key, mark, first in loader.duplicates:
        rep.issues.append(
            RoutingIssue(
                file, mark.line + 1, mark.column + 1, f"duplicate key {key!r} (first defined on line {first.line + 1})"
            )
        )
    if not isinstance(data, dict):
        rep.add((), "top level must be a mapping with 'version' and 'rules'")
        raise RoutingFileError(rep.issues)

    config: RoutingConfig | None = None
    try:
        config = RoutingConfig.model_validate(data)
    except ValidationError as exc:
        _pydantic_issues(exc, rep)
    except RecursionError:
        rep.add((), "file contains a recursive alias")
    _cross_check(data, known, rep)
    if rep.issues or config is None:
        raise RoutingFileError(rep.issues)
    return config


def load_rules(
    path: str | Path,
    known_applications: KnownApplications = DEFAULT_APPLICATIONS,
) -> RoutingConfig:
    """Read and validate a routing file; raise :class:`RoutingFileError`."""
    file = str(path)
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise RoutingFileError([RoutingIssue(file, 1, 1, f"cannot read file: {exc.strerror or exc}")]) from None
    return parse_rules(decode_rules(raw, file), known_applications, file=file)


def decode_rules(raw: bytes, file: str) -> str:
    """Decode file bytes as UTF-8, reporting the position of a bad byte."""
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        before = raw[: exc.start]
        line = before.count(b"\n") + 1
        column = exc.start - (before.rfind(b"\n") + 1) + 1
        raise RoutingFileError([RoutingIssue(file, line, column, "file is not valid UTF-8")]) from None


# --------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------


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
                app.name, {"options": copy.deepcopy(app.options), "destinations": [], "rules": []}
            )
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
