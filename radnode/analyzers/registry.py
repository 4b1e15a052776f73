"""Which analyzers this node can run: built-ins plus configured plugins.

Plugins are named by import path (``package.module:Class``) in settings, so
a site adds an application without editing radnode.
"""

from __future__ import annotations

import importlib
from typing import Any, Iterable

import structlog

from radnode.analyzers.base import Analyzer

log = structlog.get_logger(__name__)

#: Built-in applications by name → import path (loaded lazily: heavy deps).
BUILTINS: dict[str, str] = {
    "glioma": "radnode.analyzers.glioma.analyzer:GliomaAnalyzer",
}

#: Applications the routing file may name even before their analyzer is installed.
PLANNED_APPLICATIONS = frozenset({"glioma", "metastasis", "hemorrhage"})


class RegistryError(Exception):
    """An analyzer is unknown or its plugin cannot be imported."""


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

    @classmethod
    def from_settings(cls, settings: Any) -> "Registry":
        """The node's registry: built-ins plus ``analyzers.plugins``, set up with *settings*."""
        return cls(settings.analyzers.plugins, settings)

    def names(self) -> list[str]:
        return sorted(set(self._paths) | set(self._classes))

    def known_applications(self) -> frozenset[str]:
        """What routing may name: installed analyzers and the planned built-ins."""
        return frozenset(self.names()) | PLANNED_APPLICATIONS

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
