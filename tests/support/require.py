"""One rule for a test whose peer, tool or file is missing.

On a workstation a missing DCMTK, Orthanc, RabbitMQ … skips the test with the reason. On CI (``CI`` set) it
fails: every peer the README promises is installed by ``scripts/install.sh``, and a missing one means a broken
machine, which must not turn into a green run of skipped tests.
"""

from __future__ import annotations

import os

import pytest


def unavailable(reason: str) -> None:
    """Fail on CI, skip elsewhere; never returns."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (required on CI)", pytrace=False)
    pytest.skip(reason)
