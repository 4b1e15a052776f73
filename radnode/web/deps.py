"""Shared request dependencies: the settings, store and registry on ``app.state``."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from pydantic import BaseModel
from sqlalchemy.orm import Session, sessionmaker

from radnode.settings import Settings


class NoOptions(BaseModel):
    pass


def settings(request: Request) -> Settings:
    return request.app.state.settings  # type: ignore[no-any-return]


def db(request: Request) -> sessionmaker[Session]:
    return request.app.state.db  # type: ignore[no-any-return]


def known_applications(request: Request) -> frozenset[str]:
    return request.app.state.registry.known_applications()  # type: ignore[no-any-return]


def installed_applications(request: Request) -> list[str]:
    return request.app.state.registry.names()  # type: ignore[no-any-return]


def options_model(request: Request, application: str) -> type[BaseModel]:
    """The application's declared options model (an analyzer that cannot load has none)."""
    from radnode.analyzers.registry import RegistryError

    cache: dict[str, Any] = request.app.state.options_models
    if application not in cache:
        try:
            cache[application] = request.app.state.registry.get(application).spec.options
        except RegistryError:
            cache[application] = NoOptions
    return cache[application]  # type: ignore[no-any-return]
