"""What every analyzer built around one ONNX model shares: finding the model, its spec, its settings.

Why a base class: each application's analyzer finds its model in the model
store by application name (or a job's ``model`` option by name), loads it
through the process-wide session cache, and describes itself with the
model's name, version and demo flag. Written once here, an application only
says what is its own (:meth:`describe`) and what it computes (``run``).

An analyzer is set up even when no model for it is installed (a node serving
every application must still start); its jobs then fail with the model
store's message naming the folders searched.
"""

from __future__ import annotations

from typing import Any, ClassVar, TypeVar

import structlog

from radnode.analyzers.base import AnalyzerSpec, ModelInfo
from radnode.analyzers.runtime import ModelError, ModelManifest, ModelRef, ModelStore, SessionCache

log = structlog.get_logger(__name__)

_A = TypeVar("_A", bound="ModelBackedAnalyzer")


def model_info(manifest: ModelManifest | None) -> ModelInfo | None:
    """The spec's account of a model (None without one)."""
    if manifest is None:
        return None
    return ModelInfo(name=manifest.name, version=manifest.version, demo=manifest.demo, intended_use=manifest.intended_use)


class ModelBackedAnalyzer:
    """Base of the analyzers whose work is one model found by application name."""

    #: The application (and model store) name.
    application: ClassVar[str]

    def __init__(self, store: ModelStore | None = None, cache: SessionCache | None = None) -> None:
        self.store = store or ModelStore()
        self.cache = cache or SessionCache()
        self.model_ref: ModelRef | None
        try:
            self.model_ref = self.store.find(application=self.application)
        except ModelError as exc:
            self.model_ref = None
            log.warning("no model installed for this application; its jobs will fail until one is",
                        application=self.application, error=str(exc))
        self.spec: AnalyzerSpec = self.describe(model_info(self.model_ref.manifest if self.model_ref else None))

    def describe(self, model: ModelInfo | None) -> AnalyzerSpec:
        """The application's spec, given its default model's description."""
        raise NotImplementedError

    @classmethod
    def from_settings(cls: type[_A], settings: Any) -> _A:
        if settings is None:
            return cls()
        return cls(ModelStore(settings.analyzers.model_dirs), SessionCache.from_settings(settings.analyzers))

    def model_ref_for(self, name: str | None) -> ModelRef:
        """The default model, or the one a job's ``model`` option names (``ModelError``, an AnalyzerError, if none)."""
        if name is None and self.model_ref is not None:
            return self.model_ref
        return self.store.find(name=name, application=self.application)
