"""Environments for the radnode processes that tests start.

``scripts/test.sh`` tests the installed wheel: it sets ``RADNODE_TEST_INSTALLED``, keeps the source tree off
``sys.path`` (``PYTHONSAFEPATH``) and puts only the tests folder on ``PYTHONPATH``. A subprocess must then see
the same: the tests (for plugin analyzers in ``tests.support``) and the *installed* radnode. Run from a source
checkout without that script, the repository itself goes on ``PYTHONPATH`` so subprocesses import the same
source as the test.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def installed_mode() -> bool:
    """True when the suite tests an installed radnode (scripts/test.sh; always on CI)."""
    return bool(os.environ.get("RADNODE_TEST_INSTALLED"))


def python_path() -> str:
    """``PYTHONPATH`` for a subprocess that imports ``radnode`` and ``tests``."""
    current = os.environ.get("PYTHONPATH", "")
    if installed_mode():
        return current
    return os.pathsep.join(p for p in (str(REPO), current) if p)
