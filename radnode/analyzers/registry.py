"""Which applications exist, which this node can run, their roles and options.

The one list of applications: routing validation and series selection, pulls,
the web forms and the worker all ask the registry. Built-in applications are
*declared* here with their series roles; a declared application is
*installed* when it has an analyzer (shipped, or a plugin named by import path
``package.module:Class`` in settings, so a site adds an application without
editing radnode). Routing may name a declared application before its analyzer
exists: its jobs then fail with "no analyzer is installed for application …".

The registry also says which applications are *urgent* (their jobs are
queued ahead of elective work and run in the workers' urgent lane): what the
application declares — the built-in declaration (hemorrhage) or its analyzer's
``spec.urgent`` — unless ``queue.urgency`` in settings says otherwise.
"""

from __future__ import annotations

import importlib
from typing import Any, Iterable

import structlog

from pydantic import BaseModel, ValidationError

from radnode.analyzers.base import Analyzer, AnalyzerSpec
from radnode.model.analysis import ApplicationRoles
from radnode.model.jobs import ELECTIVE_PRIORITY, URGENT_PRIORITY
from radnode.model.validation import describe

log = structlog.get_logger(__name__)

GLIOMA = ApplicationRoles("glioma", required=("t1c", "flair", "t2", "t1"))
METASTASIS = ApplicationRoles("metastasis", required=("t1c",), optional=("flair", "t1"))
#: Urgent: a bleed found minutes earlier changes treatment, so its jobs never wait behind elective work.
HEMORRHAGE = ApplicationRoles("hemorrhage", required=("ct_brain",), urgent=True)

#: Built-in applications and their series roles, installed or not.
BUILTIN_APPLICATIONS: dict[str, ApplicationRoles] = {a.name: a for a in (GLIOMA, METASTASIS, HEMORRHAGE)}

#: Built-in analyzers by application name → import path (loaded lazily: heavy deps).
BUILTINS: dict[str, str] = {
    "glioma": "radnode.analyzers.glioma.analyzer:GliomaAnalyzer",
    "hemorrhage": "radnode.analyzers.hemorrhage.analyzer:HemorrhageAnalyzer",
    "metastasis": "radnode.analyzers.metastasis.analyzer:MetastasisAnalyzer",
}


class RegistryError(Exception):
    """An analyzer is unknown or its plugin cannot be imported."""


class OptionsError(ValueError):
    """Options an application does not accept; the message names each problem."""


def parse_options(spec: AnalyzerSpec, options: Any) -> BaseModel:
    """The one check of an application's options against its declared schema."""
    try:
        return spec.options.model_validate(dict(options or {}))
    except ValidationError as exc:
        raise OptionsError(f"invalid options for {spec.name}: {describe(exc, top='options')}") from None


def _undeclared(name: str) -> AnalyzerSpec:
    """What is known of an application without an analyzer: no options."""
    return AnalyzerSpec(name=name, version="", description="", required_roles=())


def _import(path: str) -> type:
    module, _, attr = path.partition(":")
    if not module or not attr:
        raise RegistryError(f"plugin {path!r} must look like 'package.module:Class'")
    try:
        return getattr(importlib.import_module(module), attr)  # type: ignore[no-any-return]
    except (ImportError, AttributeError) as exc:
        raise RegistryError(f"cannot import analyzer plugin {path!r}: {exc}") from exc


class Registry:
    """Name → analyzer; instances are created once per process and kept.

    An analyzer class may define ``from_settings(settings)`` to see the
    node's settings (model folders, ONNX providers); otherwise it is built
    without arguments.
    """

    def __init__(self, plugins: Iterable[str] = (), settings: Any = None) -> None:
        self._settings = settings
        self._paths = dict(BUILTINS)
        self._classes: dict[str, type] = {}
        self._instances: dict[str, Analyzer] = {}
        for path in plugins:
            cls = _import(path)
            spec = getattr(cls, "spec", None)
            if spec is None:
                raise RegistryError(f"plugin {path!r} has no 'spec' (AnalyzerSpec)")
            self._classes[spec.name] = cls
        self._urgency: dict[str, str] = dict(getattr(getattr(settings, "queue", None), "urgency", None) or {})
        unknown = sorted(set(self._urgency) - self.declared_applications())
        if unknown:
            # A misspelt name would silently leave an urgent application elective.
            raise RegistryError(
                f"queue.urgency names unknown application(s) {', '.join(unknown)} "
                f"(known: {', '.join(sorted(self.declared_applications()))})"
            )

    @classmethod
    def from_settings(cls, settings: Any) -> "Registry":
        """The node's registry: built-ins plus ``analyzers.plugins``, set up with *settings*."""
        return cls(settings.analyzers.plugins, settings)

    def names(self) -> list[str]:
        return sorted(set(self._paths) | set(self._classes))

    def known_applications(self) -> frozenset[str]:
        """Applications this node can run (each has an analyzer)."""
        return frozenset(self.names())

    def declared_applications(self) -> frozenset[str]:
        """What routing and pulls may name: installed applications and the declared built-ins."""
        return frozenset(self.names()) | frozenset(BUILTIN_APPLICATIONS)

    def roles(self, name: str) -> ApplicationRoles:
        """The series roles of *name*: the installed analyzer's spec, else its declaration."""
        try:
            spec = self.get(name).spec  # analyzers may set spec per instance (the model found)
        except RegistryError:
            return BUILTIN_APPLICATIONS.get(name, ApplicationRoles(name, (), ()))
        return ApplicationRoles(name, tuple(spec.required_roles), tuple(spec.optional_roles), urgent=self._declared_urgent(name, spec))

    def _declared_urgent(self, name: str, spec: AnalyzerSpec | None = None) -> bool:
        declared = BUILTIN_APPLICATIONS.get(name)
        if declared is not None and declared.urgent:
            return True
        return bool((spec or self.spec(name)).urgent)

    def urgent(self, name: str) -> bool:
        """Whether *name*'s jobs are urgent: ``queue.urgency`` if it names the
        application, else its declaration (built-in or the analyzer's spec)."""
        if name in self._urgency:
            return self._urgency[name] == "urgent"
        return self._declared_urgent(name)

    def priority(self, name: str) -> int:
        """The queue priority of *name*'s jobs."""
        return URGENT_PRIORITY if self.urgent(name) else ELECTIVE_PRIORITY

    def priorities(self, names: Iterable[str]) -> dict[str, int]:
        return {name: self.priority(name) for name in names}

    def spec(self, name: str) -> AnalyzerSpec:
        """The analyzer's spec; for one that is not installed (or cannot load), a spec without options."""
        try:
            return self.get(name).spec
        except RegistryError:
            return _undeclared(name)

    def options_model(self, name: str) -> type[BaseModel]:
        """The application's options schema (none for one that is not installed or cannot load)."""
        return self.spec(name).options

    def check_options(self, name: str, options: Any) -> BaseModel | None:
        """Validate *options* for an installed application (OptionsError); None when not installed."""
        try:
            spec = self.get(name).spec
        except RegistryError:
            return None  # a declared application without an analyzer: its job records that
        return parse_options(spec, options)

    def analyzer_class(self, name: str) -> type:
        if name not in self._classes:
            if name not in self._paths:
                raise RegistryError(f"no analyzer is installed for application {name!r} (installed: {', '.join(self.names()) or 'none'})")
            self._classes[name] = _import(self._paths[name])
        return self._classes[name]

    def get(self, name: str) -> Analyzer:
        if name not in self._instances:
            cls = self.analyzer_class(name)
            factory = getattr(cls, "from_settings", None)
            try:
                self._instances[name] = factory(self._settings) if factory is not None else cls()
            except RegistryError:
                raise
            except Exception as exc:
                raise RegistryError(f"analyzer {name!r} could not be set up: {exc}") from exc
        return self._instances[name]
