"""SOP claims: one place per SOP Instance UID, held in links short enough to live in the inode."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from radnode.listener.spool import DuplicateInstanceError, Spool, claim_target

STUDY, SERIES, OTHER = "1.2.826.0.1.3680043.8.498.1", "1.2.826.0.1.3680043.8.498.1.2", "1.2.826.0.1.3680043.8.498.1.3"


def _rel(series: str, sop: str) -> Path:
    return Path(STUDY) / series / f"{sop}.dcm"


def test_a_claim_target_fits_in_the_inode_and_names_the_series() -> None:
    long_uid = "1.2." + "3" * 60
    a, b = claim_target(Path(long_uid) / long_uid / f"{long_uid}.dcm"), claim_target(_rel(SERIES, "1.2.3"))
    assert len(a) < 60 and len(b) < 60
    assert claim_target(_rel(SERIES, "1.2.3")) == claim_target(_rel(SERIES, "1.2.4"))  # same series, any instance
    assert claim_target(_rel(SERIES, "1.2.3")) != claim_target(_rel(OTHER, "1.2.3"))


def test_the_same_uid_in_the_same_series_replaces_and_in_another_is_refused(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", fsync=False)
    assert spool.write(_rel(SERIES, "1.2.3"), b"one").read_bytes() == b"one"
    assert spool.write(_rel(SERIES, "1.2.3"), b"two").read_bytes() == b"two"
    with pytest.raises(DuplicateInstanceError):
        spool.write(_rel(OTHER, "1.2.3"), b"three")
    assert not (spool.root / _rel(OTHER, "1.2.3")).exists()
    assert len(list((spool.root / ".sop").iterdir())) == 256  # made once, not on an instance's path


def test_repair_rewrites_path_claims_drops_stale_ones_and_adds_missing(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", fsync=False)
    kept, stale, missing = "1.2.10", "1.2.11", "1.2.12"
    spool.write(_rel(SERIES, kept), b"k")
    spool.write(_rel(SERIES, missing), b"m")
    old_style = spool._claim_path(kept)
    old_style.unlink()
    os.symlink(_rel(SERIES, kept).as_posix(), old_style)  # a claim as earlier versions wrote it
    os.symlink(claim_target(_rel(SERIES, stale)), spool._claim_path(stale))  # its write never completed
    spool._claim_path(missing).unlink()
    assert spool.repair_claims() == 1
    assert os.readlink(spool._claim_path(kept)) == claim_target(_rel(SERIES, kept))
    assert not os.path.lexists(spool._claim_path(stale))
    assert os.readlink(spool._claim_path(missing)) == claim_target(_rel(SERIES, missing))
    with pytest.raises(DuplicateInstanceError):
        spool.write(_rel(OTHER, kept), b"x")
