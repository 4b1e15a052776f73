"""DICOM TLS on the listener with DCMTK and pynetdicom, HTTPS for the web app,
and files no other local user can read (issue 14, acceptance 5).

Certificates are made per test session with the ``openssl`` command (a CA,
a server and a client certificate); nothing is downloaded.
"""

from __future__ import annotations

import os
import shutil
import ssl
import stat
import subprocess
import urllib.request
from pathlib import Path

import pytest
from pynetdicom import AE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from radnode.listener.service import ListenerService
from radnode.settings import PeerTls
from radnode.synth.mr_study import generate_mr_study
from radnode.tls import client_context
from tests.conftest import ListenerProcess, wait_for_port, wait_until
from tests.support import dcmtk
from tests.support.env import python_path
from tests.support.ports import free_port
from tests.support.require import unavailable


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    if shutil.which("openssl") is None:
        unavailable("openssl is needed to make test certificates")
    d = tmp_path_factory.mktemp("pki")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", "/CN=radnode test CA", cwd=d)
    for name in ("server", "client"):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=d)
        (d / f"{name}.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-out", f"{name}.crt", "-days", "2", "-extfile", f"{name}.ext", cwd=d)
    # A CA nobody trusts, for the "wrong certificate" case.
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "rogue.key", "-out", "rogue.crt", "-days", "2", "-subj", "/CN=rogue", cwd=d)
    return {p.stem + p.suffix.replace(".", "_"): p for p in d.iterdir()}


def _tls(pki: dict[str, Path], require_client_cert: bool = True) -> dict[str, object]:
    return {"cert_file": str(pki["server_crt"]), "key_file": str(pki["server_key"]), "ca_file": str(pki["ca_crt"]), "require_client_cert": require_client_cert}


def _storescu_tls(port: int, files: list[Path], pki: dict[str, Path], key: str = "client") -> subprocess.CompletedProcess[str]:
    cmd = [dcmtk.tool("storescu"), "-aec", "RADNODE", "-aet", "TLSMODALITY", "+tls", str(pki[f"{key}_key"]), str(pki[f"{key}_crt"]),
           "+cf", str(pki["ca_crt"]), "127.0.0.1", str(port), *map(str, files)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=dcmtk.dcmtk_env(), check=False)


def test_storescu_over_tls_stores_and_plain_storescu_fails(make_settings, pki: dict[str, Path], tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    dcmtk.require_dcmtk("storescu", "echoscu")
    service = ListenerService(make_settings(listener={"tls": _tls(pki), "network_timeout": 5.0}))
    service.start()
    try:
        port = service.settings.port
        study = generate_mr_study(tmp_path / "study", seed=21, series=("t1",), slices=3)
        files = study.series[0].files
        ok = _storescu_tls(port, files, pki)
        assert ok.returncode == 0, ok.stdout + ok.stderr
        service.flush()
        stored = sorted(service.spool.root.glob(f"{study.study_instance_uid}/*/*.dcm"))
        assert len(stored) == len(files)
        # Plain TCP to the TLS port: no association.
        plain = dcmtk.storescu("127.0.0.1", port, files, "RADNODE")
        assert plain.returncode != 0
        assert dcmtk.echoscu("127.0.0.1", port, "RADNODE", timeout=5).returncode != 0
        # A client certificate from a CA the node does not trust: refused.
        rogue = _storescu_tls(port, files, pki, key="rogue")
        assert rogue.returncode != 0
        # pynetdicom through radnode.tls.client_context (what pull/echo use per peer).
        ae = AE(ae_title="TLSSCU")
        ae.add_requested_context(Verification)
        ctx = client_context(pki["ca_crt"], pki["client_crt"], pki["client_key"])
        assoc = ae.associate("127.0.0.1", port, ae_title="RADNODE", tls_args=(ctx, "127.0.0.1"))
        assert assoc.is_established
        assert assoc.send_c_echo().Status == 0
        assoc.release()
        # The listener still serves after all the failed handshakes.
        assert _storescu_tls(port, files[:1], pki).returncode == 0
    finally:
        service.stop()


def test_silent_tls_peer_does_not_block_the_accept_loop(make_settings, pki: dict[str, Path]) -> None:  # type: ignore[no-untyped-def]
    """The handshake runs in the connection's thread: a peer that never sends ClientHello holds nothing."""
    import socket

    service = ListenerService(make_settings(listener={"tls": _tls(pki), "network_timeout": 3.0}))
    service.start()
    silent = socket.create_connection(("127.0.0.1", service.settings.port))
    try:
        ae = AE(ae_title="TLSSCU")
        ae.add_requested_context(Verification)
        ctx = client_context(pki["ca_crt"], pki["client_crt"], pki["client_key"])
        assoc = ae.associate("127.0.0.1", service.settings.port, ae_title="RADNODE", tls_args=(ctx, "127.0.0.1"))
        assert assoc.is_established
        assoc.release()
    finally:
        silent.close()
        service.stop()


def test_peer_tls_setting_builds_a_verifying_client_context(pki: dict[str, Path]) -> None:
    from radnode.settings import DicomPeer
    from radnode.tls import peer_tls_args

    peer = DicomPeer(name="pacs", ae_title="PACS", host="127.0.0.1", port=104, tls=PeerTls(ca_file=pki["ca_crt"], cert_file=pki["client_crt"], key_file=pki["client_key"]))
    args = peer_tls_args(peer, peer.host)
    assert args is not None and args[0].verify_mode == ssl.CERT_REQUIRED and args[1] == "127.0.0.1"
    assert peer_tls_args(DicomPeer(name="p", ae_title="P", host="h", port=1), "h") is None
    with pytest.raises(ValueError):
        client_context(pki["ca_crt"], cert_file=pki["client_crt"])  # key missing


def test_nothing_under_the_data_folder_is_readable_by_others(tmp_path: Path) -> None:
    """`radnode listen` (umask 027): spool, index database, secrets; after receiving a study."""
    lp = ListenerProcess(tmp_path / "data", free_port()).start()
    try:
        study = generate_mr_study(tmp_path / "study", seed=22, series=("t1",), slices=2)
        res = dcmtk.storescu("127.0.0.1", lp.port, tmp_path / "study", "RADNODE")
        assert res.returncode == 0, res.stdout + res.stderr
        wait_until(lambda: any(s["state"] == "complete" for s in lp.studies()))
    finally:
        lp.stop()
    paths = [tmp_path / "data", *(tmp_path / "data").rglob("*")]
    assert any(p.suffix == ".dcm" for p in paths) and any(p.name == "radnode.sqlite3" for p in paths)
    exposed = [f"{p} {stat.filemode(p.lstat().st_mode)}" for p in paths if not p.is_symlink() and p.lstat().st_mode & 0o007]
    assert exposed == []
    assert stat.S_IMODE((tmp_path / "data" / "radnode.sqlite3").stat().st_mode) == 0o600
    assert study.study_instance_uid


def test_web_app_serves_https_without_a_proxy(tmp_path: Path, pki: dict[str, Path]) -> None:
    port = free_port()
    env = {**os.environ, "RADNODE_DATA_DIR": str(tmp_path / "data"), "RADNODE_WEB__TLS__CERT_FILE": str(pki["server_crt"]),
           "RADNODE_WEB__TLS__KEY_FILE": str(pki["server_key"]), "PYTHONPATH": python_path()}
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "radnode.cli", "web", "--port", str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for_port(port, proc=proc)
        ctx = ssl.create_default_context(cafile=str(pki["ca_crt"]))
        with urllib.request.urlopen(f"https://127.0.0.1:{port}/healthz", context=ctx, timeout=10) as r:
            assert r.status == 200
        with pytest.raises(OSError):  # plain HTTP to the HTTPS port: no answer (URLError, reset)
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5)
    finally:
        proc.terminate()
        proc.wait(20)


def test_every_outbound_association_uses_the_configured_tls(make_settings, pki: dict[str, Path], tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A TLS-only radnode listener stands in for the PACS. Results (a destination
    marked ``tls: true``, and one naming a configured peer), the connectivity
    check and the pull's C-FIND all open their association in
    radnode.peers.dicom.associate, which takes the remote's TLS context."""
    from radnode.model.jobs import Destination
    from radnode.peers.destinations import CallerIdentity, open_destination
    from radnode.peers.dicom import PeerUnavailable, Remote, echo
    from radnode.settings import DeliverySettings, Settings

    pacs = ListenerService(make_settings(ae_title="TLSPACS", listener={"tls": _tls(pki)}))
    pacs.start()
    try:
        port = pacs.settings.port
        client = {"ca_file": str(pki["ca_crt"]), "cert_file": str(pki["client_crt"]), "key_file": str(pki["client_key"])}
        node = Settings(data_dir=tmp_path / "node", peers=[{"name": "pacs", "ae_title": "TLSPACS", "host": "127.0.0.1", "port": port, "tls": client}])
        files = generate_mr_study(tmp_path / "study", seed=23, series=("t1",), slices=2).series[0].files

        # 1. tls: true on the destination, files from delivery.dicom_tls.
        marked = Destination(name="archive", ae_title="TLSPACS", host="127.0.0.1", port=port, tls=True)
        caller = CallerIdentity(delivery=DeliverySettings(dicom_tls=client), timeout=10.0)
        report = open_destination(marked, caller).send(files[:1])
        assert report.ok and len(report.sent) == 1
        assert open_destination(marked, caller).check().ok
        with pytest.raises(ValueError, match="delivery.dicom_tls"):
            open_destination(marked, CallerIdentity())

        # 2. a destination naming a configured peer takes that peer's tls.
        plain = Destination(name="archive", ae_title="TLSPACS", host="127.0.0.1", port=port)
        report = open_destination(plain, CallerIdentity(peers=tuple(node.peers), timeout=10.0)).send(files[1:])
        assert report.ok and len(report.sent) == 1
        # Without TLS the TLS port gives no association.
        with pytest.raises(PeerUnavailable):
            open_destination(plain, CallerIdentity(timeout=3.0)).send(files[:1])

        # 3. connectivity check and pull (C-FIND) towards the peer: Remote.for_peer carries its tls.
        remote = Remote.for_peer(node.peers[0])
        assert remote.tls is not None
        assert echo(remote, "RADNODE", timeout=10.0).ok
        assert not echo(Remote("TLSPACS", "127.0.0.1", port, "plain"), "RADNODE", timeout=3.0).ok
    finally:
        pacs.stop()


def test_pull_c_find_goes_over_tls_to_a_peer_configured_with_tls(pki: dict[str, Path], tmp_path: Path) -> None:
    """The pull's C-FIND (radnode.peers.dicom_query, used by radnode.jobs.pull) to a TLS-only Query/Retrieve SCP."""
    from pydicom.dataset import Dataset
    from pynetdicom import evt
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind  # type: ignore[attr-defined]

    from radnode.peers.dicom import Remote
    from radnode.peers.dicom_query import find_studies
    from radnode.settings import Settings
    from radnode.tls import server_context

    def on_find(event: object) -> object:
        match = Dataset()
        match.QueryRetrieveLevel = "STUDY"
        match.AccessionNumber = "ACC-TLS"
        match.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.77"
        match.NumberOfStudyRelatedInstances = "3"
        yield 0xFF00, match

    scp = AE(ae_title="TLSQR")
    scp.add_supported_context(StudyRootQueryRetrieveInformationModelFind)
    port = free_port()
    server = scp.start_server(("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_FIND, on_find)],
                              ssl_context=server_context(pki["server_crt"], pki["server_key"], pki["ca_crt"], require_client_cert=True))
    try:
        client = {"ca_file": str(pki["ca_crt"]), "cert_file": str(pki["client_crt"]), "key_file": str(pki["client_key"])}
        node = Settings(data_dir=tmp_path / "node", peers=[{"name": "qr", "ae_title": "TLSQR", "host": "127.0.0.1", "port": port, "tls": client}])
        found = find_studies(Remote.for_peer(node.peers[0]), "RADNODE", "ACC-TLS", timeout=10.0)
        assert [f.study_instance_uid for f in found] == ["1.2.826.0.1.3680043.8.498.77"]
    finally:
        server.shutdown()
        scp.shutdown()
