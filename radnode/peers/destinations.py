"""Where results go: one small interface, one type per kind of target.

A job's destinations (:class:`radnode.model.jobs.Destination`) are turned into
:class:`ResultDestination` objects by :func:`open_destination`, which looks the
kind up in :data:`KINDS`; the worker then only calls ``send``, ``confirm`` and
``check``, never asks which kind it holds. A new kind (e-mail, HL7, FHIR) is a
new module with a class of this shape plus one entry in :data:`KINDS` (and the
field that names it on ``Destination``).
"""

from __future__ import annotations

import ssl
import tempfile
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Protocol

from radnode.model.delivery import ResultPackage
from radnode.model.jobs import Destination
from radnode.peers import dicom, dicomweb
from radnode.peers.dicom import EchoResult, Remote, SendReport
from radnode.tls import matching_peer, peer_context


@dataclass(frozen=True)
class CallerIdentity:
    """Who radnode is when it calls out: its AE title, patience and TLS context."""

    ae_title: str = "RADNODE"
    timeout: float = 30.0
    tls: ssl.SSLContext | None = None
    #: ``settings.delivery`` (SMTP, HL7, FHIR) for the message kinds; None = defaults.
    delivery: Any = None
    #: ``settings.report`` (institution name, colours) for e-mail.
    branding: Any = None
    #: ``settings.peers``: a DICOM destination that names one (AE title, host,
    #: port) associates with that peer's ``tls``.
    peers: tuple[Any, ...] = ()
    #: A :class:`radnode.deid.Deidentifier` for ``external: true``
    #: destinations (built by the composition: it needs the store and the
    #: node's key); None refuses to send to an external destination.
    deid: Any = None


class ResultDestination(Protocol):
    """What the worker needs from any kind of destination."""

    name: str
    label: str
    #: True when ``confirm`` asks the destination what it holds (DICOM,
    #: DICOMweb); False when the send's own acknowledgement is the
    #: confirmation (SMTP accept, HL7 ACK, FHIR 2xx).
    confirms: bool

    def send(self, files: list[Path], package: ResultPackage | None = None, *, done: Collection[str] = ()) -> SendReport:
        """Deliver *files* (DICOM kinds) or *package* (message kinds).

        ``done`` holds the items (SOP Instance UIDs, recipients, message ids)
        an earlier attempt already delivered; they are not sent again.
        Returns the per-item outcome, or raises PeerUnavailable when nothing
        could be tried.
        """
        ...

    def confirm(self, study_instance_uid: str, series_instance_uids: Iterable[str]) -> dict[str, int]:
        """Ask the destination how many instances of each series it now holds."""
        ...

    def check(self) -> EchoResult:
        """Is the destination reachable and willing (C-ECHO, a QIDO query …)?"""
        ...


class DicomDestination:
    """A DICOM C-STORE SCP: C-STORE, confirmed by a series-level C-FIND."""

    confirms = True

    def __init__(self, dest: Destination, caller: CallerIdentity) -> None:
        self.name = dest.name
        self.label = dest.label
        self.remote = Remote.for_destination(dest.name, dest.ae_title, dest.host, dest.port or 104, tls=dicom_tls(dest, caller))
        self.caller = caller

    def send(self, files: list[Path], package: ResultPackage | None = None, *, done: Collection[str] = ()) -> SendReport:
        return dicom.store_files(self.remote, _not_done(files, done), self.caller.ae_title, self.caller.timeout)

    def confirm(self, study_instance_uid: str, series_instance_uids: Iterable[str]) -> dict[str, int]:
        return dicom.confirm_series(self.remote, study_instance_uid, series_instance_uids, self.caller.ae_title, self.caller.timeout)

    def check(self) -> EchoResult:
        return dicom.echo(self.remote, self.caller.ae_title, self.caller.timeout)


class ExternalDicomDestination(DicomDestination):
    """A DICOM destination outside the hospital (``external: true``).

    What it receives is a de-identified copy (PS3.15 E.1 basic profile,
    :mod:`radnode.deid`); the pseudonym map stays in the node's database, so
    what comes back can be re-identified. Reports and confirmations are told
    in the original UIDs, so the worker's bookkeeping (``done``, retries)
    does not see the pseudonyms.
    """

    @property
    def deid(self) -> Any:
        """The caller's de-identifier; a send without one is refused (nothing identifiable leaves)."""
        if self.caller.deid is None:
            raise ValueError(f"destination {self.name!r} is external: a de-identifier is needed (CallerIdentity.deid)")
        return self.caller.deid

    def send(self, files: list[Path], package: ResultPackage | None = None, *, done: Collection[str] = ()) -> SendReport:
        from radnode.deid import deidentify_files

        deid = self.deid
        with tempfile.TemporaryDirectory(prefix="radnode-deid-") as tmp:
            copies = deidentify_files(deid, _not_done(files, done), Path(tmp))
            report = dicom.store_files(self.remote, list(copies), self.caller.ae_title, self.caller.timeout)
        original = {pseudo: orig for orig, pseudo in copies.values()}
        return SendReport(
            sent=[original.get(uid, uid) for uid in report.sent],
            failed={original.get(uid, uid): why for uid, why in report.failed.items()},
        )

    def confirm(self, study_instance_uid: str, series_instance_uids: Iterable[str]) -> dict[str, int]:
        series = list(series_instance_uids)
        pseudo = {self._pseudo(uid): uid for uid in series}
        found = super().confirm(self._pseudo(study_instance_uid), list(pseudo))
        return {pseudo.get(uid, uid): n for uid, n in found.items()}

    def _pseudo(self, uid: str) -> str:
        return uid if self.deid.options.retain_uids else str(self.deid.pseudo_uid(uid))


def dicom_tls(dest: Destination, caller: CallerIdentity) -> ssl.SSLContext | None:
    """The DICOM TLS context towards *dest*, in this order: the caller's own
    (``CallerIdentity.tls``), ``delivery.dicom_tls`` for a destination marked
    ``tls: true``, the ``tls`` of a configured peer with the destination's AE
    title, host and port; else None (plain TCP)."""
    if caller.tls is not None:
        return caller.tls
    if dest.tls:
        files = getattr(caller.delivery, "dicom_tls", None)
        if files is None:
            raise ValueError(f"destination {dest.name!r}: tls: true needs delivery.dicom_tls (at least its ca_file)")
        return peer_context(files)
    peer = matching_peer(caller.peers, dest.host, dest.port or 104, dest.ae_title)
    return None if peer is None else peer_context(getattr(peer, "tls", None))


class DicomWebDestination:
    """A DICOMweb service: STOW-RS, confirmed by QIDO-RS."""

    confirms = True

    def __init__(self, dest: Destination, caller: CallerIdentity) -> None:
        self.name = dest.name
        self.label = dest.label
        self.url = str(dest.url)

    def send(self, files: list[Path], package: ResultPackage | None = None, *, done: Collection[str] = ()) -> SendReport:
        return dicomweb.stow_files(_not_done(files, done), self.url)

    def confirm(self, study_instance_uid: str, series_instance_uids: Iterable[str]) -> dict[str, int]:
        return dicomweb.confirm_series(study_instance_uid, series_instance_uids, self.url)

    def check(self) -> EchoResult:
        return dicomweb.check(self.url)


def _not_done(files: list[Path], done: Collection[str]) -> list[Path]:
    """The files whose SOP Instance UID an earlier attempt has not delivered."""
    if not done:
        return list(files)
    from pydicom import dcmread

    return [f for f in files if str(dcmread(f, stop_before_pixels=True, specific_tags=["SOPInstanceUID"]).SOPInstanceUID) not in done]


def _message_kinds() -> dict[str, Callable[[Destination, CallerIdentity], ResultDestination]]:
    from radnode.peers.fhir import FhirDestination
    from radnode.peers.hl7 import Hl7Destination
    from radnode.peers.mail import MailDestination
    from radnode.peers.webhook import WebhookDestination

    return {"email": MailDestination, "hl7": Hl7Destination, "fhir": FhirDestination, "webhook": WebhookDestination}


#: Destination kind (``Destination.kind``) → the type that talks to it.
KINDS: dict[str, Callable[[Destination, CallerIdentity], ResultDestination]] = {
    "dicom": DicomDestination,
    "dicomweb": DicomWebDestination,
    **_message_kinds(),
}


def open_destination(dest: Destination, caller: CallerIdentity) -> ResultDestination:
    """The object that sends to *dest*; ValueError for a kind nobody registered."""
    if dest.external:  # only DICOM destinations can be external (Destination validates it)
        return ExternalDicomDestination(dest, caller)
    factory = KINDS.get(dest.kind)
    if factory is None:
        raise ValueError(f"destination {dest.name!r}: no sender for kind {dest.kind!r} (known: {', '.join(sorted(KINDS))})")
    return factory(dest, caller)
