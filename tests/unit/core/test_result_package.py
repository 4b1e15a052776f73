"""The result package validates its arguments like highdicom's constructors:
a wrong value is refused before any message is built, naming the argument."""

from __future__ import annotations

import pytest

from radnode.model.delivery import PackagedFinding, PackagedMeasurement, ResultPackage


def test_arguments_are_checked_and_named() -> None:
    with pytest.raises(ValueError, match="^value:"):
        PackagedMeasurement("volume", float("nan"), "mL")
    with pytest.raises(ValueError, match="^code:"):
        PackagedMeasurement("volume", 1.0, "mL", ("118565006", "SCT"))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="^probability:"):
        PackagedFinding("bleed", True, 1.5)
    with pytest.raises(ValueError, match="^job_id:"):
        ResultPackage(job_id="", application="a", study_instance_uid="1.2")
    with pytest.raises(ValueError, match="^pdf:"):
        ResultPackage(job_id="j", application="a", study_instance_uid="1.2", pdf=b"<html>")
    with pytest.raises(TypeError, match="^measurements:"):
        ResultPackage(job_id="j", application="a", study_instance_uid="1.2", measurements=(("v", 1.0, "mL"),))  # type: ignore[arg-type]


def test_critical_means_a_present_critical_finding() -> None:
    absent = ResultPackage(job_id="j", application="hemorrhage", study_instance_uid="1.2", findings=(PackagedFinding("bleed", False, 0.1, critical=True),))
    present = ResultPackage(job_id="j", application="hemorrhage", study_instance_uid="1.2", findings=(PackagedFinding("bleed", True, 0.9, critical=True),))
    assert not absent.critical and absent.summary() == "hemorrhage results"
    assert present.critical and present.summary() == "CRITICAL: bleed (hemorrhage)"
