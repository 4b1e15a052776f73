"""Routing a study that a pull asked for.

A pulled study runs exactly the application and options of its pull request,
and its results go back to the PACS it came from. The router asks here, in
its own transaction, whether a completed study is such a study and records
what it became; the pull's own bookkeeping (request, retrieve, runner) is
:mod:`radnode.jobs.pull`, which this module does not need.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from radnode.routing.rules import (
    DicomNode,
    PlannedApplication,
    RoutingConfig,
    default_destinations,
)
from radnode.settings import Settings
from radnode.store.pulls import PullRequestRow

#: States in which a completed study is routed as this pull (the C-MOVE's
#: final response can come after the listener has seen the last instance).
ROUTABLE_STATES = ("retrieving", "received")


@dataclass(frozen=True)
class PullRouting:
    """What the router needs to route a pulled study: exactly this application
    and options, results back to the PACS it came from."""

    pull_id: int
    application: str
    options: Mapping[str, Any]
    sender: DicomNode | None

    def planned(self, config: RoutingConfig) -> PlannedApplication:
        """The one application of the pull, with the rules' default destinations
        (``return_to_sender`` = the PACS pulled from)."""
        return PlannedApplication(
            name=self.application,
            options=dict(self.options),
            destinations=default_destinations(config, self.sender),
            rules=(f"pull #{self.pull_id}",),
        )


def pull_for_study(settings: Settings, sessions: sessionmaker[Session], study_uid: str) -> PullRouting | None:
    """The most recent pull of *study_uid*, if it is still waiting for its study."""
    with sessions() as session:
        row = session.scalars(
            select(PullRequestRow).where(PullRequestRow.study_instance_uid == study_uid).order_by(PullRequestRow.id.desc()).limit(1)
        ).first()
    if row is None or row.state not in ROUTABLE_STATES:
        return None
    peer = next((p for p in settings.peers if p.name == row.pacs), None)
    sender = DicomNode(ae_title=peer.ae_title, host=peer.host, port=peer.port) if peer is not None else None
    return PullRouting(pull_id=row.id, application=row.application, options=json.loads(row.options_json or "{}"), sender=sender)


def mark_routed(session: Session, pull_id: int, jobs: Sequence[tuple[str, str]]) -> None:
    """In the router's transaction: the pull became these (job id, state)."""
    row = session.get(PullRequestRow, pull_id)
    if row is None:
        return
    row.state = "routed"
    row.message = "routed: " + (", ".join(f"job {job_id} ({state})" for job_id, state in jobs) or "no job")
    row.updated_at = time.time()


