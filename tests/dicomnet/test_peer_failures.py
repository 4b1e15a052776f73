"""Every way a peer can fail reads the same wherever it surfaces.

A scripted peer (``tests/support/misbehaving_peer.py``) rejects the
association with each A-ASSOCIATE-RJ reason, aborts, accepts and never
answers, or closes the connection; a port with nothing listening and a host
name that does not resolve complete the list. For each fault the pull record,
the connectivity check (C-ECHO) and a result send (C-STORE) must carry the
same sentence — the one from ``radnode.peers.dicom.diagnose`` — and that
sentence must say what to check.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from radnode.jobs.pull import request_pull, run_pull
from radnode.model.jobs import Destination
from radnode.peers.destinations import CallerIdentity, open_destination
from radnode.peers.dicom import FailureKind, PeerUnavailable, Remote, store_files
from radnode.settings import DicomPeer, Settings
from radnode.store.db import open_store
from radnode.synth.mr_study import generate_mr_study
from radnode.web.connectivity import echo_peer
from tests.support.misbehaving_peer import MutePeer, misbehaving_peer
from tests.support.ports import free_port

TIMEOUT = 1.0
PLUGIN = "tests.support.analyzers:CountingAnalyzer"


def _label(port: int) -> str:
    return f"PACS 'pacs' at 127.0.0.1:{port}"


#: (mode, peer arguments, failure kind, the diagnosis after the label) — written out, not computed.
REJECTIONS: list[tuple[tuple[int, int, int], str]] = [
    ((1, 1, 1), "refused the association (permanently): no reason given — the PACS may not know radnode's calling AE title 'RADNODE'; check its modality list"),
    ((1, 1, 2), "refused the association (permanently): application context name not supported"),
    ((1, 1, 3), "refused the association (permanently): calling AE title 'RADNODE' not recognised — add radnode (AE 'RADNODE') to the PACS's known modalities"),
    ((1, 1, 7), "refused the association (permanently): called AE title 'ODDPACS' not recognised — check peers[].ae_title"),
    ((1, 2, 1), "refused the association (permanently): no reason given (ACSE service provider)"),
    ((1, 2, 2), "refused the association (permanently): protocol version not supported"),
    ((2, 3, 1), "refused the association (for now): temporary congestion — try again later"),
    ((2, 3, 2), "refused the association (for now): local limit exceeded (too many associations) — try again later"),
]


def _settings(tmp_path: Path, port: int, host: str = "127.0.0.1") -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        port=free_port(),
        peers=[{"name": "pacs", "ae_title": "ODDPACS", "host": host, "port": port}],
        analyzers={"plugins": [PLUGIN]},
    )


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("study")
    generate_mr_study(root, seed=5, series=("t1c",), rows=16, columns=16, slices=2)
    return sorted(root.rglob("*.dcm"))


def _surfaces(settings: Settings, files: list[Path]) -> dict[str, str]:
    """The diagnosis as the pull record, the connectivity check and a C-STORE show it."""
    peer: DicomPeer = settings.peers[0]
    engine, sessions = open_store(settings)
    try:
        row = request_pull(settings, sessions, "ACC-9", "count-test")
        pulled = run_pull(settings, sessions, row.id, timeout=TIMEOUT)
    finally:
        engine.dispose()
    assert pulled.state == "failed"
    echoed = echo_peer(settings, peer, timeout=TIMEOUT)
    assert not echoed["ok"]
    with pytest.raises(PeerUnavailable) as sent:
        store_files(Remote.for_peer(peer), files, settings.ae_title, timeout=TIMEOUT)
    return {"pull": pulled.message, "echo": echoed["diagnosis"], "send": str(sent.value), "kind": sent.value.kind}


@pytest.mark.parametrize(("codes", "text"), REJECTIONS, ids=[f"rj-{r}-{s}-{d}" for (r, s, d), _ in REJECTIONS])
def test_each_rejection_reason_reads_the_same_everywhere(tmp_path: Path, files: list[Path], codes: tuple[int, int, int], text: str) -> None:
    result, source, reason = codes
    with misbehaving_peer("reject", result=result, source=source, reason=reason) as peer:
        seen = _surfaces(_settings(tmp_path, peer.port), files)
        assert peer.requests == 3
    expected = f"{_label(peer.port)} {text}"
    assert seen == {"pull": expected, "echo": expected, "send": expected, "kind": FailureKind.REJECTED}


def test_a_rejection_code_outside_the_table_falls_back_to_pynetdicoms_words(tmp_path: Path, files: list[Path]) -> None:
    with misbehaving_peer("reject", result=1, source=3, reason=7) as peer:  # not a defined combination
        seen = _surfaces(_settings(tmp_path, peer.port), files)
    assert seen["pull"] == seen["echo"] == seen["send"]
    assert seen["pull"].startswith(f"{_label(peer.port)} refused the association (permanently): ")
    assert seen["pull"].endswith("(source 3, reason 7)")


@contextmanager
def _nothing_listening() -> Iterator[Any]:
    class Dead:
        port = free_port()

    yield Dead()


FAULTS = {
    "abort": (
        lambda: misbehaving_peer("abort"),
        FailureKind.ABORTED,
        "{label} aborted the association request — check peers[].ae_title and that the PACS knows radnode's AE title 'RADNODE'",
    ),
    "close": (
        lambda: misbehaving_peer("close"),
        FailureKind.ABORTED,
        "{label} aborted the association request — check peers[].ae_title and that the PACS knows radnode's AE title 'RADNODE'",
    ),
    "silent": (
        lambda: misbehaving_peer("silent"),
        FailureKind.NO_ANSWER,
        "{label} accepted the connection but did not answer the association request within 1 s — is it a DICOM port?",
    ),
    "nothing-listening": (
        _nothing_listening,
        FailureKind.REFUSED,
        "could not connect to {label}: connection refused or host unreachable — is the PACS running, and are peers[].host and port right?",
    ),
}


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_aborts_silence_and_refused_connections_read_the_same_everywhere(tmp_path: Path, files: list[Path], fault: str) -> None:
    make, kind, text = FAULTS[fault]
    with make() as peer:
        seen = _surfaces(_settings(tmp_path, peer.port), files)
    expected = text.format(label=_label(peer.port))
    assert seen == {"pull": expected, "echo": expected, "send": expected, "kind": kind}


def test_a_host_name_that_does_not_resolve(tmp_path: Path, files: list[Path]) -> None:
    seen = _surfaces(_settings(tmp_path, 104, host="no-such-pacs.invalid"), files)
    expected = "could not connect to PACS 'pacs' at no-such-pacs.invalid:104: the host name 'no-such-pacs.invalid' does not resolve — check peers[].host and port"
    assert seen == {"pull": expected, "echo": expected, "send": expected, "kind": FailureKind.UNRESOLVED}


def test_a_peer_that_associates_and_then_never_answers(tmp_path: Path, files: list[Path]) -> None:
    mute = MutePeer()
    try:
        settings = _settings(tmp_path, mute.port)
        engine, sessions = open_store(settings)
        try:
            pulled = run_pull(settings, sessions, request_pull(settings, sessions, "ACC-9", "count-test").id, timeout=TIMEOUT)
        finally:
            engine.dispose()
        echoed = echo_peer(settings, settings.peers[0], timeout=TIMEOUT)
        report = store_files(Remote.for_peer(settings.peers[0]), files[:1], settings.ae_title, timeout=TIMEOUT)
    finally:
        mute.close()
    label = _label(mute.port)
    assert pulled.state == "failed"
    assert pulled.message == f"{label} stopped answering the C-FIND (aborted or timed out after 1 s)"
    assert echoed["diagnosis"] == f"{label} stopped answering the C-ECHO (aborted or timed out after 1 s)"
    assert report.sent == [] and list(report.failed.values()) == [f"{label} stopped answering the C-STORE (aborted or timed out after 1 s)"]


def test_a_result_destination_gets_the_same_diagnosis_in_its_own_words(files: list[Path]) -> None:
    """A routing destination is named as such, and the setting to fix is the destination's."""
    with misbehaving_peer("reject", result=1, source=1, reason=7) as peer:
        dest = open_destination(Destination(name="archive", ae_title="ODDPACS", host="127.0.0.1", port=peer.port), CallerIdentity(timeout=TIMEOUT))
        with pytest.raises(PeerUnavailable) as sent:
            dest.send(files)
        check = dest.check()
    assert sent.value.kind is FailureKind.REJECTED
    assert str(sent.value) == (
        f"destination 'archive' at 127.0.0.1:{peer.port} refused the association (permanently): "
        "called AE title 'ODDPACS' not recognised — check the ae_title of destination 'archive'"
    )
    assert not check.ok and check.diagnosis == str(sent.value)


def test_destination_kinds_come_from_one_table() -> None:
    from radnode.peers.destinations import KINDS, DicomDestination, DicomWebDestination

    caller = CallerIdentity()
    assert isinstance(open_destination(Destination(name="a", ae_title="X", host="h", port=104), caller), DicomDestination)
    assert isinstance(open_destination(Destination(name="b", url="http://h/dicom-web"), caller), DicomWebDestination)
    assert set(KINDS) == {"dicom", "dicomweb", "email", "hl7", "fhir", "webhook"}


def test_every_destination_kind_checks_connectivity(orthanc_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """`check()` behind the one interface: C-ECHO for DICOM, a QIDO-RS query for DICOMweb."""
    plugin = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
    assert plugin.exists(), "orthanc-dicomweb is not installed (scripts/install.sh installs it)"
    pacs = orthanc_factory(aet="ARCHIVE", extra_config={"Plugins": [str(plugin)], "DicomWeb": {"Enable": True, "Root": "/dicom-web/"}})
    caller = CallerIdentity(timeout=5.0)
    dicom = open_destination(Destination(name="archive", ae_title="ARCHIVE", host="127.0.0.1", port=pacs.dicom_port), caller).check()
    web = open_destination(Destination(name="web", url=f"http://127.0.0.1:{pacs.http_port}/dicom-web"), caller).check()
    assert dicom.ok and dicom.status == 0x0000 and dicom.diagnosis == "C-ECHO succeeded"
    assert web.ok and web.diagnosis == "QIDO-RS answered"
    dead = f"http://127.0.0.1:{free_port()}/dicom-web"
    down = open_destination(Destination(name="gone", url=dead), caller).check()
    assert not down.ok and down.kind is FailureKind.REFUSED and down.diagnosis.startswith(f"QIDO-RS to {dead} failed: ")
