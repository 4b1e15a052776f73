"""``--json`` prints exactly one JSON document on stdout in every outcome; exit codes as documented."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.support.env import python_path


def _radnode(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("RADNODE_")}
    return subprocess.run([sys.executable, "-m", "radnode.cli", *args], capture_output=True, text=True, cwd=cwd,
                          env={**base, "PYTHONPATH": python_path(), **(env or {})}, timeout=120)


def test_a_usage_error_is_one_json_document_with_exit_code_2(tmp_path: Path) -> None:
    res = _radnode("analyze", "glioma", "no-such-folder", "--out", "out", "--json", cwd=tmp_path)
    assert res.returncode == 2, res.stdout + res.stderr
    doc = json.loads(res.stdout)
    assert doc["state"] == "failed" and doc["usage"] is True and "no-such-folder" in doc["error"]


def test_an_invalid_configuration_is_one_json_document_with_exit_code_2(tmp_path: Path) -> None:
    (tmp_path / "radnode.yaml").write_text("listener: {max_associations: -3}\n")
    res = _radnode("studies", "--json", cwd=tmp_path)
    assert res.returncode == 2, res.stdout + res.stderr
    doc = json.loads(res.stdout)
    assert doc["state"] == "failed" and "listener.max_associations" in doc["error"]


def test_an_unknown_application_is_one_json_document_with_exit_code_1(tmp_path: Path) -> None:
    (tmp_path / "study").mkdir()
    res = _radnode("analyze", "no-such-app", "study", "--out", "out", "--json", cwd=tmp_path)
    assert res.returncode == 1, res.stdout + res.stderr
    doc = json.loads(res.stdout)
    assert doc["state"] == "failed" and "no-such-app" in doc["error"]


def test_an_empty_folder_is_one_json_document(tmp_path: Path) -> None:
    (tmp_path / "study").mkdir()
    res = _radnode("analyze", "glioma", "study", "--out", "out", "--json", cwd=tmp_path)
    assert res.returncode == 1, res.stdout + res.stderr
    doc = json.loads(res.stdout)
    assert doc["state"] == "failed" and "no DICOM series found" in doc["error"]


def test_without_json_errors_go_to_stderr_and_help_documents_the_exit_codes(tmp_path: Path) -> None:
    (tmp_path / "study").mkdir()
    res = _radnode("analyze", "glioma", "study", "--out", "out", cwd=tmp_path)
    assert res.returncode == 1 and res.stdout == "" and "no DICOM series found" in res.stderr
    for args in (("--help",), ("analyze", "--help")):
        helptext = _radnode(*args, cwd=tmp_path).stdout
        assert "Exit codes: 0 done, 1 failed, 2 usage" in helptext and "3 needs input" in helptext
