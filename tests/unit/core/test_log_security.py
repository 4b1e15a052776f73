"""Log lines a security review reads: stdlib lines in JSON too, long values cut, PHI redacted."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.support.env import python_path


def test_library_and_radnode_lines_are_all_json_and_long_values_are_cut() -> None:
    code = (
        "import logging, structlog\n"
        "from radnode.logconfig import configure_logging\n"
        "configure_logging('info', 'json')\n"
        "logging.getLogger('pynetdicom.acse').warning('Association rejected by %s', 'peer')\n"
        "structlog.get_logger('radnode.listener').warning('c-store refused', sop_uid='1.' + '2' * 60000, patient_name='DOE^JOHN')\n"
    )
    env = {**os.environ, "PYTHONPATH": python_path()}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    lines = [json.loads(line) for line in out.stderr.splitlines() if line.strip()]
    assert [l["event"] for l in lines] == ["Association rejected by peer", "c-store refused"]
    assert lines[0]["logger"] == "pynetdicom.acse" and lines[0]["level"] == "warning"
    assert len(lines[1]["sop_uid"]) < 400 and lines[1]["sop_uid"].endswith("[60002 chars]")
    assert lines[1]["patient_name"] == "[redacted]"
    assert "DOE" not in out.stderr
