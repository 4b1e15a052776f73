"""Shared request dependencies: the settings, store and registry on ``app.state``."""

from __future__ import annotations

from fastapi import Request
from sqlalchemy.orm import Session, sessionmaker

from radnode.model.analysis import AnalyzerSpec
from radnode.settings import Settings


def settings(request: Request) -> Settings:
    return request.app.state.settings  # type: ignore[no-any-return]


def db(request: Request) -> sessionmaker[Session]:
    return request.app.state.db  # type: ignore[no-any-return]


def declared_applications(request: Request) -> frozenset[str]:
    """What the routing file may name (``Registry.declared_applications``)."""
    return request.app.state.registry.declared_applications()  # type: ignore[no-any-return]


def installed_applications(request: Request) -> list[str]:
    return request.app.state.registry.names()  # type: ignore[no-any-return]


def spec(request: Request, application: str) -> AnalyzerSpec:
    """The application's spec (its options schema); one that cannot load has no options."""
    return request.app.state.registry.spec(application)  # type: ignore[no-any-return]
