"""A request the web app refuses, with the HTTP status the API answers."""

from __future__ import annotations

import structlog

log = structlog.get_logger(__name__)


class ServiceError(Exception):
    """A request the node refuses, with an HTTP status for the API."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
