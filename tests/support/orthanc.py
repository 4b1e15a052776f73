"""A real Orthanc instance as the test PACS.

Why: radnode's job is to talk to a PACS, so tests need a peer that behaves
like one (C-STORE/C-FIND/C-MOVE SCP and SCU, stable-study detection) rather
than a mock that only agrees with our own assumptions. Orthanc is small,
starts in well under a second, and its REST API lets tests inspect and drive
it (what arrived, send a study to radnode) without a second DICOM stack.

Every server gets its own folder, ports and JSON config; the process runs
with ``TCP_NODELAY=1`` (its DCMTK core otherwise stalls ~45 ms per image on
loopback) and is always waited for on exit — restarting on the same storage
folder before the old process exits corrupts its SQLite index.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from tests.support.ports import free_port

ORTHANC_BIN = os.environ.get("RADNODE_ORTHANC_BIN", "/usr/sbin/Orthanc")


class OrthancError(RuntimeError):
    """Orthanc failed to start or a REST call failed (message carries details)."""


class OrthancServer:
    """Context manager running one Orthanc process with a private config.

    ``modalities`` maps Orthanc's name for a peer to ``(aet, host, port)``;
    peers that only exist after start (radnode's listener on a free port) can
    be added later with :meth:`add_modality`.

    A graceful stop (SIGTERM) takes Orthanc 1.10 ~3.5 s (its HTTP server
    alone needs ~2 s to wind down). ``fast_stop=True`` sends SIGKILL instead
    and still waits for the exit; only use it when the work folder is thrown
    away afterwards (the SQLite index may be left mid-transaction).
    """

    def __init__(
        self,
        workdir: Path | str,
        *,
        aet: str = "ORTHANC",
        modalities: Mapping[str, Sequence[Any]] | None = None,
        http_port: int | None = None,
        dicom_port: int | None = None,
        stable_age: int = 1,
        extra_config: Mapping[str, Any] | None = None,
        start_timeout: float = 20.0,
        fast_stop: bool = False,
    ) -> None:
        self.workdir = Path(workdir)
        self.aet = aet
        self.host = "127.0.0.1"
        self.http_port = http_port or free_port()
        self.dicom_port = dicom_port or free_port()
        self.modalities = {k: list(v) for k, v in (modalities or {}).items()}
        self.stable_age = stable_age
        self.extra_config = dict(extra_config or {})
        self.start_timeout = start_timeout
        self.fast_stop = fast_stop
        self.config_path = self.workdir / "orthanc.json"
        self.log_path = self.workdir / "orthanc.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.start_seconds: float | None = None

    # -- lifecycle ---------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    def config(self) -> dict[str, Any]:
        """The JSON config Orthanc is started with (tests may inspect it)."""
        cfg: dict[str, Any] = {
            "Name": f"radnode-test-{self.aet}",
            "StorageDirectory": str(self.workdir / "storage"),
            "IndexDirectory": str(self.workdir / "index"),
            "HttpServerEnabled": True,
            "HttpPort": self.http_port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "DicomServerEnabled": True,
            "DicomAet": self.aet,
            "DicomPort": self.dicom_port,
            "DicomCheckCalledAet": False,
            "DicomModalities": self.modalities,
            "DicomAlwaysAllowEcho": True,
            "DicomAlwaysAllowStore": True,
            "DicomAlwaysAllowFind": True,
            "DicomAlwaysAllowMove": True,
            "DicomAlwaysAllowGet": True,
            "DicomModalitiesInDatabase": False,
            "StableAge": self.stable_age,
            "Plugins": [],
            "ConcurrentJobs": 2,
            "SaveJobs": False,
            "HttpTimeout": 30,
            "DicomScuTimeout": 10,
        }
        cfg.update(self.extra_config)
        return cfg

    def start(self) -> OrthancServer:
        """Write the config, start Orthanc and wait until REST answers."""
        if self.process is not None:
            raise OrthancError("already started")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(json.dumps(self.config(), indent=2))
        env = dict(os.environ, TCP_NODELAY="1")
        t0 = time.monotonic()
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [ORTHANC_BIN, "--no-jobs", str(self.config_path)],
                stdout=log, stderr=subprocess.STDOUT, env=env, cwd=self.workdir,
            )
        deadline = t0 + self.start_timeout
        while True:
            if self.process.poll() is not None:
                raise OrthancError(f"Orthanc exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                self.get("/system", timeout=1.0)
                break
            except (OSError, OrthancError):
                if time.monotonic() > deadline:
                    self.stop()
                    raise OrthancError(
                        f"Orthanc did not answer GET /system within {self.start_timeout}s:\n{self.log_tail()}"
                    ) from None
                time.sleep(0.05)
        self.start_seconds = time.monotonic() - t0
        return self

    def stop(self, timeout: float = 15.0, *, fast: bool | None = None) -> None:
        """Stop Orthanc and wait for the process to exit (kill if it hangs).

        Always waits: a new Orthanc on the same storage folder fails with a
        SQLite error while the old one is still alive. ``fast`` (default:
        the ``fast_stop`` setting) skips the graceful shutdown.
        """
        proc, self.process = self.process, None
        if proc is None or proc.poll() is not None:
            return
        if self.fast_stop if fast is None else fast:
            proc.kill()
        else:
            proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout)

    def __enter__(self) -> OrthancServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def log_tail(self, chars: int = 4000) -> str:
        """End of Orthanc's log, for failure messages."""
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return "<no log>"

    # -- REST plumbing -----------------------------------------------------

    def request(self, method: str, path: str, body: bytes | str | Mapping[str, Any] | list[Any] | None = None,
                *, content_type: str | None = None, timeout: float = 60.0) -> Any:
        """Call the REST API; decode JSON answers, return raw bytes otherwise."""
        data: bytes | None
        if body is None:
            data = None
        elif isinstance(body, bytes):
            data = body
        elif isinstance(body, str):
            data = body.encode()
        else:
            data = json.dumps(body).encode()
            content_type = content_type or "application/json"
        req = urllib.request.Request(self.url + path, data=data, method=method)
        if content_type:
            req.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                raw = resp.read()
                ctype = resp.headers.get("Content-Type", "")
        except urllib.error.HTTPError as e:
            detail = e.read().decode(errors="replace")
            raise OrthancError(f"{method} {path} -> HTTP {e.code}: {detail}") from None
        if "json" in ctype:
            return json.loads(raw) if raw else None
        return raw

    def get(self, path: str, **kw: Any) -> Any:
        return self.request("GET", path, **kw)

    def post(self, path: str, body: Any = None, **kw: Any) -> Any:
        return self.request("POST", path, body, **kw)

    def put(self, path: str, body: Any = None, **kw: Any) -> Any:
        return self.request("PUT", path, body, **kw)

    def delete(self, path: str, **kw: Any) -> Any:
        return self.request("DELETE", path, **kw)

    # -- helpers -----------------------------------------------------------

    def upload(self, path: Path | str) -> dict[str, Any]:
        """POST one DICOM file to /instances; returns Orthanc's answer (ID, Status...)."""
        return self.post("/instances", Path(path).read_bytes(), content_type="application/dicom")

    def upload_dir(self, directory: Path | str, pattern: str = "*.dcm") -> list[dict[str, Any]]:
        """Upload every file matching *pattern* below *directory* (sorted, recursive)."""
        return [self.upload(p) for p in sorted(Path(directory).rglob(pattern)) if p.is_file()]

    def upload_files(self, paths: Iterable[Path | str]) -> list[dict[str, Any]]:
        return [self.upload(p) for p in paths]

    def instances(self) -> list[str]:
        return list(self.get("/instances"))

    def studies(self) -> list[str]:
        return list(self.get("/studies"))

    def series(self) -> list[str]:
        return list(self.get("/series"))

    def series_count(self) -> int:
        return int(self.get("/statistics")["CountSeries"])

    def instance_count(self) -> int:
        return int(self.get("/statistics")["CountInstances"])

    def statistics(self) -> dict[str, Any]:
        return dict(self.get("/statistics"))

    def find_study_by_accession(self, accession: str) -> list[dict[str, Any]]:
        """Studies whose AccessionNumber matches exactly (expanded JSON objects)."""
        return list(self.post("/tools/find", {
            "Level": "Study", "Expand": True, "Query": {"AccessionNumber": accession},
        }))

    def study(self, orthanc_id: str) -> dict[str, Any]:
        return dict(self.get(f"/studies/{orthanc_id}"))

    def instance_tags(self, orthanc_id: str, simplify: bool = True) -> dict[str, Any]:
        """Tags of one instance (``simplified-tags``: keyword → value)."""
        return dict(self.get(f"/instances/{orthanc_id}/{'simplified-tags' if simplify else 'tags'}"))

    def instance_file(self, orthanc_id: str) -> bytes:
        return bytes(self.get(f"/instances/{orthanc_id}/file"))

    def add_modality(self, name: str, aet: str, host: str, port: int) -> None:
        """Declare a DICOM peer at runtime (for peers whose port is known only later)."""
        self.put(f"/modalities/{urllib.parse.quote(name)}",
                 {"AET": aet, "Host": host, "Port": int(port)})
        self.modalities[name] = [aet, host, int(port)]

    def echo_modality(self, modality: str, timeout: int = 10) -> bool:
        """C-ECHO from Orthanc to a configured peer; True on success."""
        try:
            self.post(f"/modalities/{urllib.parse.quote(modality)}/echo", {"Timeout": timeout})
            return True
        except OrthancError:
            return False

    def store_to_modality(self, modality: str, resource_ids: str | Sequence[str],
                          synchronous: bool = True, timeout: float = 120.0) -> dict[str, Any]:
        """C-STORE Orthanc resources (study/series/instance IDs) to a peer.

        Synchronous by default so a test can assert right after the call;
        Orthanc answers with counts (``InstancesCount``, ``FailedInstancesCount``).
        """
        ids = [resource_ids] if isinstance(resource_ids, str) else list(resource_ids)
        return dict(self.post(f"/modalities/{urllib.parse.quote(modality)}/store",
                              {"Resources": ids, "Synchronous": synchronous}, timeout=timeout))

    def wait_for_instances(self, count: int, timeout: float = 30.0) -> int:
        """Poll until at least *count* instances are stored (for async arrivals)."""
        deadline = time.monotonic() + timeout
        n = self.instance_count()
        while n < count and time.monotonic() < deadline:
            time.sleep(0.05)
            n = self.instance_count()
        return n
