"""Feature extraction: fixed layout, determinism, and no exceptions on bad headers."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset

from radnode.routing.features import extract_features, feature_matrix, feature_names, n_features, text_tokens
from radnode.routing.series_index import SeriesSummary
from tests.support.env import python_path

REPO = Path(__file__).resolve().parents[3]


def _summary(**tags: object) -> SeriesSummary:
    ds = Dataset()
    ds.SeriesInstanceUID = "1.2.3.4"
    for key, value in tags.items():
        setattr(ds, key, value)
    return SeriesSummary.from_header(ds, instance_count=20)


def _value(vec: np.ndarray, name: str) -> float:
    return float(vec[feature_names().index(name)])


def test_layout_is_fixed_and_unique() -> None:
    names = feature_names()
    assert len(names) == n_features() == len(set(names))
    assert "num:SeriesNumber" not in names  # a site habit, deliberately not a feature


def test_physics_and_tags_are_encoded() -> None:
    vec = extract_features(
        _summary(Modality="MR", RepetitionTime="2300", EchoTime="2.98", InversionTime="900", FlipAngle="9", MRAcquisitionType="3D",
                 ImageType=["ORIGINAL", "PRIMARY", "M", "ND"], ScanningSequence=["GR", "IR"], SeriesDescription="t1_mprage_sag_p2_iso_post",
                 ContrastBolusAgent="Gadovist", Manufacturer="SIEMENS Healthineers")
    )
    assert vec.shape == (n_features(),) and vec.dtype == np.float32
    assert _value(vec, "num:RepetitionTime") == 2300.0
    assert math.isclose(_value(vec, "num:EchoTime"), 2.98, rel_tol=1e-6)
    assert _value(vec, "num:InstanceCount") == 20.0
    assert _value(vec, "cat:MRAcquisitionType=3D") == 1.0
    assert _value(vec, "cat:ScanningSequence=GR") == 1.0 and _value(vec, "cat:ScanningSequence=IR") == 1.0
    assert _value(vec, "cat:Manufacturer=SIEMENS") == 1.0
    assert _value(vec, "derived:ContrastAgent") == 1.0
    assert _value(vec, "derived:DescPostContrast") == 1.0
    assert _value(vec, "missing:RepetitionTime") == 0.0
    assert vec[feature_names().index("desc:0") :].sum() > 0  # description hashed into buckets


def test_nonsense_values_become_nan_without_raising() -> None:
    ds = Dataset()
    ds.SeriesInstanceUID = "1.2.3"
    ds.RepetitionTime = "0"
    ds.EchoTime = "-5"
    ds[0x00181314] = DataElement(0x00181314, "LO", "abc")  # FlipAngle holding text
    ds[0x00180087] = DataElement(0x00180087, "LO", "")  # empty field strength
    vec = extract_features(SeriesSummary.from_header(ds, instance_count=1))
    for name in ("RepetitionTime", "EchoTime", "FlipAngle", "MagneticFieldStrength", "InversionTime"):
        assert math.isnan(_value(vec, f"num:{name}")), name
        assert _value(vec, f"missing:{name}") == 1.0
    assert _value(vec, "derived:DescriptionEmpty") == 1.0


def test_empty_header_and_gauss_field_strength() -> None:
    vec = extract_features(SeriesSummary.from_header(Dataset(), instance_count=0))
    assert vec.shape == (n_features(),)
    vec = extract_features(_summary(MagneticFieldStrength="15000"))
    assert math.isclose(_value(vec, "num:MagneticFieldStrength"), 1.5)


def test_b_value_from_ge_private_tag() -> None:
    ds = Dataset()
    ds.add_new((0x0043, 0x0010), "LO", "GEMS_PARM_01")
    ds.add_new((0x0043, 0x1039), "IS", ["1000001000", "8", "0", "0"])
    vec = extract_features(SeriesSummary.from_header(ds, instance_count=50))
    assert _value(vec, "num:BValue") == 1000.0


def test_pre_contrast_phrases_do_not_count_as_post() -> None:
    post = lambda d: _value(extract_features(_summary(SeriesDescription=d)), "derived:DescPostContrast")  # noqa: E731
    pre = lambda d: _value(extract_features(_summary(SeriesDescription=d)), "derived:DescPreContrast")  # noqa: E731
    for description in ("Ax T1 SE +C", "T1 C+", "sT1W_3D_TFE_GD", "t1_se_tra_KM", "AX T1 POST GAD", "T1 3D GADO"):
        assert post(description) == 1.0, description
    for description in ("T1 vor KM", "T1 sans gado", "BRAVO -C", "AX T1 PRE"):
        assert post(description) == 0.0 and pre(description) == 1.0, description


def test_text_tokens_keep_plus_and_trigrams() -> None:
    tokens = text_tokens("Ax T1 SE +C")
    assert "w:+c" in tokens and "p:+" in tokens and "g: +c" in tokens
    assert text_tokens("") == []


def test_features_are_identical_across_processes() -> None:
    """Hashing must not depend on PYTHONHASHSEED (Python's hash() is randomised)."""
    code = (
        "from pydicom.dataset import Dataset;"
        "from radnode.routing.series_index import SeriesSummary;"
        "from radnode.routing.features import extract_features;"
        "ds=Dataset(); ds.SeriesDescription='t2_tirm_tra_dark-fluid'; ds.ProtocolName='BRAIN'; ds.ConvolutionKernel='H31s';"
        "print(extract_features(SeriesSummary.from_header(ds, instance_count=3)).tobytes().hex())"
    )
    outputs = set()
    for seed in ("1", "2"):
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, env={"PYTHONHASHSEED": seed, "PATH": "/usr/bin:/bin", "PYTHONPATH": python_path(), "PYTHONSAFEPATH": os.environ.get("PYTHONSAFEPATH", "")}, check=True)
        outputs.add(result.stdout.strip().splitlines()[-1])
    assert len(outputs) == 1


def test_feature_matrix_shape() -> None:
    assert feature_matrix([]).shape == (0, n_features())
    assert feature_matrix([_summary(), _summary()]).shape == (2, n_features())
