"""Query and retrieve: C-FIND a study by accession, then C-MOVE it to radnode
or C-GET it over the same association (PS3.4 annex C, Study Root).

Only the conversation lives here; what a pull records and how it is routed is
:mod:`radnode.jobs.pull`. A C-GET's incoming instances are handed to a
``store_handler`` the caller supplies (the listener's own spool and index),
so this package never imports the receiving side.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from dataclasses import dataclass

from pydicom.dataset import Dataset
from pynetdicom import StoragePresentationContexts, build_role, evt
from pynetdicom.events import Event
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)

from radnode.peers.dicom import (
    FailureKind,
    PeerUnavailable,
    Remote,
    application_entity,
    associate,
    c_find,
    diagnose,
)

#: A C-STORE handler for instances arriving on a C-GET association: returns the DIMSE status.
StoreHandler = Callable[[Event], int]


@dataclass(frozen=True)
class FoundStudy:
    """One C-FIND match (no patient identity: only what a requester needs to choose)."""

    study_instance_uid: str
    instances: int | None
    study_date: str
    study_description: str
    modalities: str

    def describe(self) -> str:
        desc = f"{self.study_date or 'no date'} {self.study_description or '(no description)'!r}"
        if self.modalities:
            desc += f" {self.modalities}"
        if self.instances is not None:
            desc += f", {self.instances} instances"
        return f"{desc} [{self.study_instance_uid}]"


@dataclass
class RetrieveOutcome:
    """Counts and final status of one C-MOVE or C-GET."""

    status: int | None = None
    completed: int = 0
    failed: int = 0
    warning: int = 0
    remaining: int | None = None
    comment: str = ""

    @property
    def received(self) -> int:
        return self.completed + self.warning


def find_studies(remote: Remote, calling_ae: str, accession: str, timeout: float = 30.0, tls: ssl.SSLContext | None = None) -> list[FoundStudy]:
    """C-FIND (Study Root, STUDY level) by AccessionNumber; one entry per study UID."""
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.AccessionNumber = accession
    query.StudyInstanceUID = ""
    query.NumberOfStudyRelatedInstances = ""
    query.StudyDate = ""
    query.StudyDescription = ""
    query.ModalitiesInStudy = ""
    matches, final, comment = c_find(remote, calling_ae, query, timeout=timeout, tls=tls)
    if final != 0x0000:
        detail = f" ({comment})" if comment else ""
        raise PeerUnavailable(f"{remote.label} refused the C-FIND: status 0x{final:04X}{detail}", FailureKind.STATUS, remote)
    found: dict[str, FoundStudy] = {}
    for identifier in matches:
        study = _found_study(identifier, accession)
        if study is not None:
            found[study.study_instance_uid] = study
    return list(found.values())


def _found_study(identifier: Dataset, accession: str) -> FoundStudy | None:
    uid = str(identifier.get("StudyInstanceUID", "") or "").strip()
    got = str(identifier.get("AccessionNumber", accession) or accession).strip()
    if not uid or got != accession:  # a PACS that matched loosely
        return None
    raw = identifier.get("NumberOfStudyRelatedInstances")
    try:
        count = int(raw) if raw not in (None, "") else None
    except (TypeError, ValueError):
        count = None
    mods = identifier.get("ModalitiesInStudy", "") or ""
    return FoundStudy(
        study_instance_uid=uid,
        instances=count,
        study_date=str(identifier.get("StudyDate", "") or ""),
        study_description=str(identifier.get("StudyDescription", "") or ""),
        modalities=mods if isinstance(mods, str) else "\\".join(str(m) for m in mods),
    )


def retrieve_study(
    remote: Remote,
    calling_ae: str,
    study_uid: str,
    *,
    method: str = "move",
    on_progress: Callable[[RetrieveOutcome], None] = lambda _o: None,
    timeout: float = 60.0,
    store_handler: StoreHandler | None = None,
    tls: ssl.SSLContext | None = None,
) -> RetrieveOutcome:
    """C-MOVE the study to *calling_ae* (radnode's own listener), or C-GET it (``method="get"``).

    A C-GET needs *store_handler* for the instances that arrive on the same
    association. A peer that stops answering mid-retrieve ends with status
    ``None`` and the diagnosis as comment (the counts so far are kept).
    """
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    identifier.StudyInstanceUID = study_uid
    outcome = RetrieveOutcome()
    ae = application_entity(calling_ae, timeout)
    roles = []
    handlers = []
    if method == "get":
        if store_handler is None:
            raise ValueError("C-GET needs a store_handler for the arriving instances")
        model, what = StudyRootQueryRetrieveInformationModelGet, "Study Root C-GET"
        ae.add_requested_context(model)
        for cx in StoragePresentationContexts[:127]:  # 128 contexts at most, one for the C-GET itself
            syntax = str(cx.abstract_syntax)
            ae.add_requested_context(syntax)
            roles.append(build_role(syntax, scp_role=True))
        handlers = [(evt.EVT_C_STORE, store_handler)]
    else:
        model, what = StudyRootQueryRetrieveInformationModelMove, "Study Root C-MOVE"
        ae.add_requested_context(model)
    with associate(ae, remote, model=model, what=what, timeout=timeout, ext_neg=roles, evt_handlers=handlers, tls=tls) as assoc:
        responses = assoc.send_c_get(identifier, model) if method == "get" else assoc.send_c_move(identifier, calling_ae, model)
        for status, _ident in responses:
            if status is None or "Status" not in status:
                outcome.status = None
                outcome.comment = str(diagnose(remote, calling_ae, FailureKind.STOPPED_ANSWERING, timeout=timeout, what=what))
                break
            outcome.status = int(status.Status)
            outcome.completed = int(status.get("NumberOfCompletedSuboperations", outcome.completed) or 0)
            outcome.failed = int(status.get("NumberOfFailedSuboperations", outcome.failed) or 0)
            outcome.warning = int(status.get("NumberOfWarningSuboperations", outcome.warning) or 0)
            remaining = status.get("NumberOfRemainingSuboperations")
            outcome.remaining = int(remaining) if remaining not in (None, "") else None
            outcome.comment = str(status.get("ErrorComment", "") or "")
            on_progress(outcome)
    return outcome
