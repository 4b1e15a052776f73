"""Build the route stage from settings (rules watcher, classifier, router)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from sqlalchemy.orm import Session, sessionmaker

from radnode.analyzers.registry import Registry
from radnode.routing.classifier import SeriesClassifier, load_default
from radnode.routing.reload import RulesWatcher
from radnode.routing.router import Router
from radnode.settings import Settings

DEFAULT_RULES = Path(__file__).with_name("default_routing.yaml")


def rules_path(settings: Settings) -> Path:
    return settings.routing.rules_file or DEFAULT_RULES


def load_classifier(settings: Settings) -> SeriesClassifier:
    """The shipped model, or ``routing.classifier_model``; a site model must have passed its held-out check."""
    path = settings.routing.classifier_model
    if not path:
        return load_default()
    from radnode.routing.corrections import check_site_model

    clf = SeriesClassifier.load(path)
    check_site_model(clf, Path(path))
    return clf


def build_router(
    settings: Settings,
    sessions: sessionmaker[Session],
    registry: Registry,
    on_jobs: Callable[[], None] = lambda: None,
) -> tuple[Router, RulesWatcher]:
    """A router over hot-reloaded rules; start the returned watcher."""
    watcher = RulesWatcher(rules_path(settings), registry.declared_applications(), interval=settings.routing.reload_interval)
    router = Router(settings, sessions, lambda: watcher.current, load_classifier(settings), registry, on_jobs)
    return router, watcher
