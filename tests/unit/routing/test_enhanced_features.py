"""Enhanced and legacy-converted multi-frame headers read like classic ones.

The classifier must not care where a scanner keeps TR, TE, TI and flip
angle: at the top level (classic), in Unassigned Shared Converted Attributes
(legacy converted) or in the MR functional group macros (enhanced).
"""

from __future__ import annotations

import numpy as np
from pydicom.dataset import Dataset

from radnode.routing.enhanced import flatten_header
from radnode.routing.features import extract_features, feature_names
from radnode.routing.series_index import SeriesSummary
from radnode.synth.enhanced import multiframe_header


def _classic() -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.4"
    ds.SOPInstanceUID = "1.2.3.4.1"
    ds.StudyInstanceUID = "1.2.3"
    ds.SeriesInstanceUID = "1.2.3.4"
    ds.Modality = "MR"
    ds.Manufacturer = "SIEMENS"
    ds.SeriesDescription = "t2_tirm_tra_dark-fluid"
    ds.ProtocolName = "t2_tirm_tra_dark-fluid"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND", "NORM"]
    ds.ScanningSequence = ["SE", "IR"]
    ds.SequenceVariant = ["SK", "SP"]
    ds.MRAcquisitionType = "2D"
    ds.RepetitionTime = "9000"
    ds.EchoTime = "95"
    ds.InversionTime = "2500"
    ds.FlipAngle = "150"
    ds.EchoTrainLength = "16"
    ds.SliceThickness = "5"
    ds.PixelSpacing = ["0.9", "0.9"]
    ds.PixelBandwidth = "250"
    ds.MagneticFieldStrength = "3"
    ds.BodyPartExamined = "HEAD"
    ds.Rows = ds.Columns = 256
    ds.ImagesInAcquisition = "24"  # a multi-frame object counts its frames instead
    return ds


def _physics(vec: np.ndarray) -> dict[str, float]:
    names = feature_names()
    keep = ("num:RepetitionTime", "num:EchoTime", "num:InversionTime", "num:FlipAngle", "num:SliceThickness", "num:EchoTrainLength",
            "num:PixelSpacing", "num:PixelBandwidth", "num:ImagesInAcquisition", "derived:HasInversion", "derived:TE_over_TR",
            "cat:ScanningSequence=SE", "cat:ScanningSequence=IR", "cat:MRAcquisitionType=2D", "cat:BodyPartExamined=HEAD")
    return {n: float(vec[names.index(n)]) for n in keep}


def test_classic_header_is_returned_unchanged() -> None:
    ds = _classic()
    assert flatten_header(ds) is ds


def test_legacy_and_enhanced_headers_give_the_classic_physics() -> None:
    classic = _classic()
    reference = _physics(extract_features(SeriesSummary.from_header(classic, instance_count=24)))
    assert reference["num:RepetitionTime"] == 9000 and reference["derived:HasInversion"] == 1.0
    for kind in ("legacy", "enhanced"):
        mf = multiframe_header(_classic(), 24, kind=kind)
        assert "RepetitionTime" not in mf and "EchoTime" not in mf and "InversionTime" not in mf, kind
        got = _physics(extract_features(SeriesSummary.from_header(mf, instance_count=24)))
        assert got == reference, (kind, {k: (v, got[k]) for k, v in reference.items() if got[k] != v})


def test_enhanced_macros_are_lifted_under_classic_keywords() -> None:
    mf = multiframe_header(_classic(), 24, kind="enhanced", contrast=("FLUID_ATTENUATED", "FLUID_ATTENUATED"))
    shared = mf.SharedFunctionalGroupsSequence[0]
    assert float(shared.MRTimingAndRelatedParametersSequence[0].RepetitionTime) == 9000
    assert float(shared.MREchoSequence[0].EffectiveEchoTime) == 95
    assert shared.MRModifierSequence[0].InversionRecovery == "YES" and "InversionTimes" in shared.MRModifierSequence[0]
    flat = flatten_header(mf)
    assert float(flat.RepetitionTime) == 9000 and float(flat.EchoTime) == 95 and float(flat.InversionTime) == 2500
    assert float(flat.FlipAngle) == 150
    assert list(flat.ScanningSequence) == ["SE", "IR"]  # from Echo Pulse Sequence + Inversion Recovery
    assert flat.AcquisitionContrast == "FLUID_ATTENUATED" and list(flat.ImageType)[2] == "FLUID_ATTENUATED"
    assert int(flat.ImagesInAcquisition) == 24
    # The original is not modified.
    assert "RepetitionTime" not in mf


def test_contrast_usage_macro_counts_as_contrast_agent() -> None:
    classic = _classic()
    classic.ContrastBolusAgent = "Gadovist"
    mf = multiframe_header(classic, 24, kind="enhanced")
    del mf.ContrastBolusAgent  # an enhanced object may only say it in Contrast/Bolus Usage
    assert mf.SharedFunctionalGroupsSequence[0].ContrastBolusUsageSequence[0].ContrastBolusAgentAdministered == "YES"
    vec = extract_features(SeriesSummary.from_header(mf, instance_count=24))
    assert vec[feature_names().index("derived:ContrastAgent")] == 1.0


def test_real_enhanced_mr_header_from_pydicom() -> None:
    from pydicom import dcmread
    from pydicom.data import get_testdata_file

    ds = dcmread(get_testdata_file("emri_small.dcm"), stop_before_pixels=True)
    vec = extract_features(SeriesSummary.from_header(ds))
    names = feature_names()
    assert vec[names.index("cat:AcquisitionContrast=T1")] == 1.0
    assert vec[names.index("cat:ImageType=T1")] == 1.0
    assert vec[names.index("cat:ScanningSequence=GR")] == 1.0  # EchoPulseSequence GRADIENT
    assert vec[names.index("cat:MRAcquisitionType=3D")] == 1.0


def test_selection_tie_break_reads_thickness_from_pixel_measures() -> None:
    from radnode.routing.selection import _tie_key

    classic = SeriesSummary.from_header(_classic(), instance_count=24)
    enhanced = SeriesSummary.from_header(multiframe_header(_classic(), 24, kind="enhanced"), instance_count=24)
    assert "SliceThickness" not in enhanced.header
    assert _tie_key(enhanced)[:3] == _tie_key(classic)[:3] == (0.0, -5.0, 24.0)
