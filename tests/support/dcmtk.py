"""Thin wrappers around the real DCMTK command-line tools for tests.

Why: radnode must interoperate with the DICOM stacks hospitals run, and
DCMTK is the reference implementation most PACS and modalities build on. The
tests drive the real Debian binaries by absolute path (``/usr/bin/...``)
because pynetdicom installs same-named Python apps earlier on ``PATH``.

Every tool gets ``TCP_NODELAY=1`` in its environment: without it Debian's
DCMTK stalls ~45 ms per image on loopback (Nagle + delayed ACK).

Each wrapper returns the ``CompletedProcess`` (text stdout/stderr) and does
not raise on a non-zero exit, so tests can assert on both outcome and
output.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from tests.support.require import unavailable

DCMTK_BIN = Path(os.environ.get("RADNODE_DCMTK_BIN", "/usr/bin"))

#: storescu flags that make it propose a given transfer syntax (plus the
#: uncompressed ones). Measured with DCMTK 3.6.7 against Orthanc and storescp
#: (``+xa``): without the flag storescu negotiates only uncompressed syntaxes
#: and every compressed file fails ("unable to convert dataset"), except
#: deflated, which it inflates and sends as Explicit VR Little Endian.
STORESCU_PROPOSE: dict[str, tuple[str, ...]] = {
    "uncompressed": ("-xe",),
    "jpeg-lossless": ("-xs",),  # 1.2.840.10008.1.2.4.70
    "jpeg-baseline": ("-xy",),  # 1.2.840.10008.1.2.4.50
    "jpeg2000": ("-xv",),  # 1.2.840.10008.1.2.4.90
    "jpegls": ("-xt",),  # 1.2.840.10008.1.2.4.80
    "rle": ("-xr",),  # 1.2.840.10008.1.2.5
    "deflated": ("-xd",),  # 1.2.840.10008.1.2.1.99
}

_TOOLS = ("echoscu", "storescu", "storescp", "findscu", "movescu")


def tool(name: str) -> str:
    """Absolute path of a DCMTK binary (never the pynetdicom shim on PATH)."""
    return str(DCMTK_BIN / name)


def dcmtk_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment for DCMTK processes: the caller's plus ``TCP_NODELAY=1``."""
    env = dict(os.environ)
    env["TCP_NODELAY"] = "1"
    if extra:
        env.update(extra)
    return env


def require_dcmtk(*names: str) -> None:
    """Skip the test when DCMTK is missing locally; fail when it is missing on CI.

    On CI (``CI`` set) a missing binary means a broken image, which must not
    turn into a green run of skipped tests.
    """
    missing = [n for n in (names or _TOOLS) if not os.access(tool(n), os.X_OK)]
    if not missing:
        return
    msg = f"DCMTK binaries missing in {DCMTK_BIN}: {', '.join(missing)} (apt-get install dcmtk)"
    unavailable(msg)


def _run(cmd: Sequence[str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout, env=dcmtk_env())


def echoscu(host: str, port: int, called_ae: str, calling_ae: str = "ECHOSCU",
            timeout: float = 10) -> subprocess.CompletedProcess[str]:
    """C-ECHO (verification); rc 0 means the peer accepted and answered."""
    return _run([tool("echoscu"), "-v", "-aet", calling_ae, "-aec", called_ae,
                 "-to", str(int(timeout)), "-ta", str(int(timeout)),
                 host, str(port)], timeout + 5)


#: Transfer syntax UID → key of :data:`STORESCU_PROPOSE`, for ``propose="auto"``.
_TS_TO_PROPOSE = {
    "1.2.840.10008.1.2.4.70": "jpeg-lossless",
    "1.2.840.10008.1.2.4.50": "jpeg-baseline",
    "1.2.840.10008.1.2.4.90": "jpeg2000",
    "1.2.840.10008.1.2.4.80": "jpegls",
    "1.2.840.10008.1.2.5": "rle",
    "1.2.840.10008.1.2.1.99": "deflated",
}
_UNCOMPRESSED = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2"}


def _expand(paths: Sequence[Path]) -> list[Path]:
    out: list[Path] = []
    for p in paths:
        out.extend(sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p])
    return out


def propose_for(paths: Sequence[Path | str]) -> str | None:
    """Pick the :data:`STORESCU_PROPOSE` key for files (dirs are walked).

    storescu cannot propose two compressed syntaxes without a config file, so
    a mix of compressed syntaxes is an error; all-uncompressed gives None.
    """
    import pydicom  # local: only needed for "auto"

    keys: set[str] = set()
    for f in _expand([Path(p) for p in paths]):
        try:
            ts = str(pydicom.dcmread(f, stop_before_pixels=True).file_meta.TransferSyntaxUID)
        except Exception:  # noqa: BLE001 - non-DICOM files are storescu's problem
            continue
        if ts in _UNCOMPRESSED:
            continue
        if ts not in _TS_TO_PROPOSE:
            raise ValueError(f"{f}: no storescu propose flag for transfer syntax {ts}")
        keys.add(_TS_TO_PROPOSE[ts])
    if len(keys) > 1:
        raise ValueError(f"files mix compressed transfer syntaxes {sorted(keys)}; send them separately")
    return keys.pop() if keys else None


def store_failures(result: subprocess.CompletedProcess[str]) -> list[str]:
    """storescu's error lines (``E: ...``).

    With ``-nh`` (``keep_going=True``) storescu exits 0 even when stores
    failed (e.g. a compressed file whose syntax was not proposed: "unable to
    convert dataset ... Store Failed"), so tests must check these lines.
    """
    return [line for line in (result.stdout + result.stderr).splitlines() if line.startswith(("E:", "F:"))]


def storescu(host: str, port: int, files_or_dir: Path | str | Iterable[Path | str], called_ae: str,
             calling_ae: str = "STORESCU", *, propose: str | None = None, keep_going: bool = False,
             extra_args: Sequence[str] = (), timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """C-STORE files or whole directories (recursive ``+sd +r``) in one association.

    By default storescu proposes only uncompressed syntaxes and then FAILS to
    send compressed files (it cannot transcode them). ``propose`` is a key of
    :data:`STORESCU_PROPOSE` (e.g. ``"jpeg2000"`` → ``-xv``) so files travel in
    their own encoding, or ``"auto"`` to pick it from the files' meta headers.
    ``keep_going`` adds ``-nh`` (do not halt after a failed store) — then the
    exit status is 0 even on failures; use :func:`store_failures`.
    """
    if isinstance(files_or_dir, (str, Path)):
        paths = [Path(files_or_dir)]
    else:
        paths = [Path(p) for p in files_or_dir]
    if propose == "auto":
        propose = propose_for(paths)
    cmd = [tool("storescu"), "-v", "-aet", calling_ae, "-aec", called_ae, "-to", "10", "-ta", "30"]
    if keep_going:
        cmd.append("-nh")
    if any(p.is_dir() for p in paths):
        cmd += ["+sd", "+r"]
    if propose is not None:
        cmd += list(STORESCU_PROPOSE[propose])
    cmd += list(extra_args)
    cmd += [host, str(port), *map(str, paths)]
    return _run(cmd, timeout)


def storescp_process(port: int, out_dir: Path | str, aet: str = "STORESCP", *,
                     extra_args: Sequence[str] = ("+xa",), ignore: bool = False) -> subprocess.Popen[str]:
    """Start DCMTK ``storescp`` as a receiving peer (caller terminates it).

    ``+xa`` accepts every supported transfer syntax so compressed data is
    stored as received; ``+B`` writes the received bytes without re-encoding
    (fastest); ``ignore=True`` adds ``--ignore`` (receive, discard) for pure
    network benchmarks. Single-process mode, output flat in *out_dir*.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cmd = [tool("storescp"), "-aet", aet, "-od", str(out), "+B", *extra_args]
    if ignore:
        cmd.append("--ignore")
    cmd.append(str(port))
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=dcmtk_env())


def findscu(host: str, port: int, called_ae: str, keys: Mapping[str, str] | Sequence[str],
            calling_ae: str = "FINDSCU", *, model: str = "study", out_dir: Path | str | None = None,
            timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """C-FIND with ``-k`` keys (``{"AccessionNumber": "X", "StudyInstanceUID": ""}``).

    ``model`` is ``"study"`` (-S), ``"patient"`` (-P) or ``"worklist"`` (-W).
    Matches are logged on stderr/stdout in verbose mode; with ``out_dir`` each
    response is also written as ``rsp0001.dcm``... (``-X``) so tests can read
    them with pydicom instead of parsing logs.
    """
    flag = {"study": "-S", "patient": "-P", "worklist": "-W"}[model]
    items = [f"{k}={v}" for k, v in keys.items()] if isinstance(keys, Mapping) else list(keys)
    cmd = [tool("findscu"), "-v", flag, "-aet", calling_ae, "-aec", called_ae,
           "-to", "10", "-ta", "30"]
    for item in items:
        cmd += ["-k", item]
    if out_dir is not None:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        cmd += ["-X", "-od", str(out_dir)]
    cmd += [host, str(port)]
    return _run(cmd, timeout)


def movescu(host: str, port: int, called_ae: str, keys: Mapping[str, str] | Sequence[str],
            move_destination: str, calling_ae: str = "MOVESCU", *, model: str = "study",
            timeout: float = 120, extra_args: Sequence[str] = ()) -> subprocess.CompletedProcess[str]:
    """C-MOVE matches of ``keys`` to ``move_destination`` (an AE the peer knows).

    The destination must be configured on the peer (for Orthanc: in
    ``DicomModalities``). ``-k QueryRetrieveLevel=STUDY`` is added unless given.
    """
    flag = {"study": "-S", "patient": "-P"}[model]
    items = [f"{k}={v}" for k, v in keys.items()] if isinstance(keys, Mapping) else list(keys)
    if not any(i.split("=", 1)[0] in ("QueryRetrieveLevel", "0008,0052", "(0008,0052)") for i in items):
        items.insert(0, "QueryRetrieveLevel=STUDY")
    cmd = [tool("movescu"), "-v", flag, "-aet", calling_ae, "-aec", called_ae,
           "-aem", move_destination, "-to", "10", "-ta", "30"]
    for item in items:
        cmd += ["-k", item]
    cmd += [*extra_args, host, str(port)]
    return _run(cmd, timeout)


def have_dcmtk() -> bool:
    """True when all DCMTK tools used here are installed (for skipif markers)."""
    return all(os.access(tool(n), os.X_OK) for n in _TOOLS)
