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
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.sop_class import MRImageStorage, Verification  # type: ignore[attr-defined]

from radnode.listener.service import ListenerService
from radnode.settings import PeerTls
from radnode.synth.mr_study import generate_mr_study
from radnode.tls import client_context
from tests.conftest import ListenerProcess, wait_for_port, wait_until
from tests.support import dcmtk
from tests.support.ports import free_port


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    if shutil.which("openssl") is None:
        pytest.fail("openssl is needed to make test certificates")
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
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=dcmtk.dcmtk_env())


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
    from radnode.tls import peer_tls_args
    from radnode.settings import DicomPeer

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
           "RADNODE_WEB__TLS__KEY_FILE": str(pki["server_key"])}
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "radnode.cli", "web", "--port", str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for_port(port, proc=proc)
        ctx = ssl.create_default_context(cafile=str(pki["ca_crt"]))
        with urllib.request.urlopen(f"https://127.0.0.1:{port}/healthz", context=ctx, timeout=10) as r:  # noqa: S310 - test URL
            assert r.status == 200
        with pytest.raises(Exception):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5)  # noqa: S310
    finally:
        proc.terminate()
        proc.wait(20)


def test_results_are_sent_over_tls_to_a_peer_configured_with_tls(make_settings, pki: dict[str, Path], tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """send_files with tls_for_node: a TLS-only radnode listener stands in for the PACS."""
    from radnode.settings import Settings
    from radnode.sr_writer.send import send_files
    from radnode.tls import tls_for_node

    pacs = ListenerService(make_settings(ae_title="TLSPACS", listener={"tls": _tls(pki)}))
    pacs.start()
    try:
        port = pacs.settings.port
        node = Settings(data_dir=tmp_path / "node", peers=[{"name": "pacs", "ae_title": "TLSPACS", "host": "127.0.0.1", "port": port,
                                                            "tls": {"ca_file": str(pki["ca_crt"]), "cert_file": str(pki["client_crt"]), "key_file": str(pki["client_key"])}}])
        files = generate_mr_study(tmp_path / "study", seed=23, series=("t1",), slices=2).series[0].files
        args = tls_for_node(node, "127.0.0.1", port, "TLSPACS")
        assert args is not None
        report = send_files(files, "127.0.0.1", port, "TLSPACS", calling_ae="RADNODE", tls_args=args)
        assert report.ok and len(report.sent) == 2
        assert tls_for_node(node, "127.0.0.1", port, "OTHER") is None
    finally:
        pacs.stop()
