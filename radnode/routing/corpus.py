"""A reproducible, labelled corpus of synthetic series headers.

Why synthetic: no public, redistributable set of labelled clinical brain
series headers exists offline, and the classifier only ever looks at
headers. Real sites differ mainly in three ways, and the generator models
each of them explicitly so that a model trained on some *families* can be
evaluated honestly on families it never saw:

* naming: every family (vendor + naming habit, e.g. Siemens syngo protocol
  names, a GE site's own names, a European site with German/French words)
  has its own templates for each sequence archetype, its own plane spelling
  and its own ways of writing "post contrast" (or none: then only the
  ContrastBolusAgent tag says so);
* physics: TR/TE/TI/flip angle, 2D/3D, slice thickness, image counts and
  the vendor's habits (ScanningSequence, SequenceVariant, ScanOptions,
  ImageType spellings, where the b-value is stored) are drawn from realistic
  ranges at 1.5 T and 3 T;
* study structure: localizers, calibrations, derived series (ADC, MPR, MIP,
  subtraction, phase images), series after contrast injection that are not
  T1 (post-contrast FLAIR is still ``flair``), spine and angiography studies,
  head CT with brain and bone kernels, scouts, reformats and dose pages.

Everything is driven by one seeded ``numpy`` generator: the same seed gives
the same corpus, UIDs included.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import structlog
from pydicom.dataset import Dataset

from radnode.routing.labels import LABELS  # noqa: F401  (re-exported for the corpus' users)
from radnode.routing.series_index import SeriesSummary
from radnode.synth.enhanced import multiframe_header

log = structlog.get_logger(__name__)

MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"

#: Archetype -> label. T1 archetypes become ``t1c`` when acquired after contrast.
ARCHETYPE_LABEL: dict[str, str] = {
    "loc": "localizer", "cal": "other",
    "t1_se": "t1", "t1_ir": "t1", "t1_3d": "t1", "t1_3d_se": "t1", "t1_gre_2d": "t1",
    "t2_tse": "t2", "t2_3d": "t2", "flair_2d": "flair", "flair_3d": "flair",
    "dwi": "dwi", "adc": "adc", "swi": "swi",
    "swi_mip": "other", "swi_phase": "other", "t2star": "other", "stir": "other", "tof": "other", "tof_mip": "other",
    "perf": "other", "asl": "other", "fmri": "other", "svs": "other", "dti": "other", "fa": "other", "mpr": "other", "sub": "other",
    "spine_t2": "other", "spine_t1": "other",
    "ct_brain": "ct_brain", "ct_bone": "other", "ct_scout": "localizer", "ct_mpr": "other", "ct_cta": "other",
    "ct_body": "other", "ct_dose": "other",
}
T1_ARCHETYPES = ("t1_se", "t1_ir", "t1_3d", "t1_3d_se", "t1_gre_2d")

#: Names for archetypes added after most families were written (v2); a
#: family's own names win when it has them.
GENERIC_NAMES: dict[str, tuple[str, ...]] = {
    "fmri": ("ep2d_bold_rest", "BOLD_resting_state", "fMRI_task", "rs-fMRI", "Ax BOLD", "RESTING_STATE", "bold_mb4_2mm", "fMRI_motor"),
}

#: Acquisition Contrast / Image Flavor an Enhanced MR scanner writes for each archetype (PS3.3 C.8.13.1.1.1, C.8.16.1.3).
ACQUISITION_CONTRAST: dict[str, tuple[str, str]] = {
    "t1_se": ("T1", "T1"), "t1_ir": ("T1", "T1"), "t1_3d": ("T1", "T1"), "t1_3d_se": ("T1", "T1"), "t1_gre_2d": ("T1", "T1"),
    "spine_t1": ("T1", "T1"), "t2_tse": ("T2", "T2"), "t2_3d": ("T2", "T2"), "spine_t2": ("T2", "T2"),
    "flair_2d": ("FLUID_ATTENUATED", "FLUID_ATTENUATED"), "flair_3d": ("FLUID_ATTENUATED", "FLUID_ATTENUATED"),
    "dwi": ("DIFFUSION", "DIFFUSION"), "adc": ("DIFFUSION", "DIFFUSION"), "dti": ("DIFFUSION", "DIFFUSION"), "fa": ("DIFFUSION", "DIFFUSION"),
    "swi": ("T2_STAR", "T2_STAR"), "swi_mip": ("T2_STAR", "MIN_IP"), "swi_phase": ("T2_STAR", "T2_STAR"), "t2star": ("T2_STAR", "T2_STAR"),
    "stir": ("STIR", "STIR"), "tof": ("TOF", "ANGIO"), "tof_mip": ("TOF", "MAX_IP"), "perf": ("PERFUSION", "PERFUSION"),
    "asl": ("PERFUSION", "PERFUSION"), "fmri": ("T2_STAR", "FMRI"), "mpr": ("T1", "T1"), "sub": ("T1", "T1"),
}


@dataclass(frozen=True)
class Family:
    """A vendor plus one site's naming habits."""

    name: str
    vendor: str
    modality: str
    names: dict[str, tuple[str, ...]]
    planes: dict[str, str] = field(default_factory=lambda: {"ax": "tra", "sag": "sag", "cor": "cor"})
    post_tokens: tuple[str, ...] = ()
    pre_tokens: tuple[str, ...] = ()
    contrast_tag_rate: float = 0.6
    field_3t_rate: float = 0.5
    protocol_style: str = "desc"  # desc | study | desc_suffix
    #: Share of MR series sent as one multi-frame object (legacy converted or
    #: enhanced): their physics lives in functional groups (v2).
    multiframe_rate: float = 0.15


@dataclass(frozen=True)
class CorpusItem:
    """One synthetic series: its summary (header inside), label and family."""

    summary: SeriesSummary
    label: str
    family: str
    archetype: str


def _f(*names: str) -> tuple[str, ...]:
    return tuple(names)


FAMILIES: dict[str, Family] = {}


def _register(family: Family) -> None:
    FAMILIES[family.name] = family


_register(Family(
    name="siemens_syngo", vendor="SIEMENS", modality="MR",
    post_tokens=_f("_post", "_KM", "_Gd", "_+KM", "_post_KM"), pre_tokens=_f("_pre", "_nativ"), contrast_tag_rate=0.5,
    names={
        "loc": _f("localizer", "AAHead_Scout_32ch-head-coil", "localizer_3plane", "AAHead_Scout_MPR_{pl}"),
        "cal": _f("AutoAlign_Cal", "pre_scan_normalize"),
        "t1_se": _f("t1_se_{pl}{post}", "t1_tse_{pl}{post}", "t1_se_{pl}_p2{post}"),
        "t1_ir": _f("t1_tirm_{pl}_dark-fluid{post}", "t1_flair_{pl}{post}"),
        "t1_3d": _f("t1_mprage_sag_p2_iso{post}", "t1_mprage_{pl}{post}", "t1_mpr_sag_iso{post}", "MPRAGE{post}"),
        "t1_3d_se": _f("t1_space_sag_p2_iso{post}", "t1_spc_{pl}_iso{post}"),
        "t1_gre_2d": _f("t1_fl2d_{pl}{post}",),
        "t2_tse": _f("t2_tse_{pl}", "t2_tse_{pl}_p2", "t2_tse_{pl}_320{post}"),
        "t2_3d": _f("t2_spc_sag_p2_iso", "t2_space_{pl}"),
        "flair_2d": _f("t2_tirm_{pl}_dark-fluid{post}", "t2_tirm_{pl}_dark-fluid_p2", "t2_flair_{pl}{post}"),
        "flair_3d": _f("t2_space_dark-fluid_sag_p2_iso{post}", "t2_spc_da-fl_sag_p2_iso", "t2_spc_flair_sag_p2"),
        "dwi": _f("ep2d_diff_3scan_trace", "ep2d_diff_3scan_trace_p2_TRACEW", "ep2d_diff_tra_b1000_TRACEW", "resolve_diff_tra_TRACEW"),
        "adc": _f("ep2d_diff_3scan_trace_ADC", "ep2d_diff_3scan_trace_p2_ADC", "ep2d_diff_tra_ADC", "resolve_diff_tra_ADC"),
        "swi": _f("SWI_Images", "swi_tra_SWI", "t2_swi_tra_p2_SWI"),
        "swi_mip": _f("mIP_Images(SW)", "swi_tra_mIP"),
        "swi_phase": _f("Pha_Images", "swi_tra_Pha", "Mag_Images"),
        "t2star": _f("t2_fl2d_{pl}_hemo", "t2_me2d_{pl}"),
        "stir": _f("t2_tirm_cor_stir", "t2_stir_{pl}"),
        "tof": _f("tof_fl3d_tra_p2", "tof_3d_multi-slab"),
        "tof_mip": _f("tof_fl3d_tra_p2_MIP_SAG", "MIP_COR"),
        "perf": _f("ep2d_perf", "ep2d_perf_p2", "Perfusion_Weighted"),
        "asl": _f("tgse_pcasl_tra", "pasl_3d"),
        "svs": _f("svs_se_135", "svs_se_30", "csi_se_135"),
        "dti": _f("ep2d_diff_mddw_30_p2", "ep2d_DTI_64dir"),
        "fa": _f("ep2d_diff_mddw_30_p2_FA", "ep2d_diff_mddw_30_p2_ColFA"),
        "mpr": _f("t1_mprage_sag_p2_iso_post_MPR_tra", "t1_mpr_cor_MPR", "MPR Range"),
        "sub": _f("t1_se_tra_SUB", "SUBTRACTION"),
        "spine_t2": _f("t2_tse_sag_spine", "t2_tse_sag_384"),
        "spine_t1": _f("t1_tse_sag_spine", "t1_tse_sag_384"),
    },
))
_register(Family(
    name="siemens_site", vendor="SIEMENS", modality="MR", planes={"ax": "AX", "sag": "SAG", "cor": "COR"},
    post_tokens=_f(" POST", " +C", " KM", " post Gd", " W CONTRAST"), pre_tokens=_f(" PRE", " NATIVE"), contrast_tag_rate=0.7,
    protocol_style="study",
    names={
        "loc": _f("LOCALIZER", "3 PLANE LOC", "Scout"),
        "cal": _f("Prescan Normalize",),
        "t1_se": _f("{pl} T1 SE{post}", "{pl} T1{post}", "T1 {pl}{post}"),
        "t1_ir": _f("{pl} T1 FLAIR{post}", "{pl} T1 IR{post}"),
        "t1_3d": _f("SAG T1 MPRAGE{post}", "3D T1 MPRAGE{post}", "T1 3D SAG{post}", "SAG MPRAGE ISO{post}"),
        "t1_3d_se": _f("SAG T1 SPACE{post}", "3D T1 SPACE{post}"),
        "t2_tse": _f("{pl} T2 TSE", "{pl} T2", "T2 {pl}{post}"),
        "t2_3d": _f("SAG T2 SPACE", "3D T2 {pl}"),
        "flair_2d": _f("{pl} FLAIR{post}", "{pl} T2 FLAIR", "FLAIR {pl}{post}"),
        "flair_3d": _f("SAG 3D FLAIR{post}", "3D FLAIR SPACE", "SAG FLAIR SPACE ISO"),
        "dwi": _f("{pl} DWI", "DWI TRACE", "AX DIFFUSION", "DWI b1000"),
        "adc": _f("{pl} DWI ADC", "ADC", "ADC MAP", "AX DIFFUSION_ADC"),
        "swi": _f("AX SWI", "SWI", "SWI COMBINED"),
        "swi_mip": _f("SWI MINIP", "AX SWI mIP"),
        "swi_phase": _f("SWI PHASE", "SWI MAG"),
        "t2star": _f("{pl} T2* GRE", "{pl} GRE HEMO"),
        "stir": _f("COR STIR", "{pl} STIR"),
        "tof": _f("3D TOF COW", "MRA HEAD TOF"),
        "tof_mip": _f("MRA MIP", "TOF MIP AX"),
        "perf": _f("PERFUSION", "DSC PERFUSION"),
        "asl": _f("ASL", "PCASL PERFUSION"),
        "svs": _f("SVS TE 135", "MRS SINGLE VOXEL"),
        "dti": _f("DTI 30 DIR", "AX DTI"),
        "fa": _f("DTI FA", "DTI COLOR FA"),
        "mpr": _f("AX MPR{post}", "COR MPR{post}", "MPR AX 3mm"),
        "sub": _f("SUB T1", "T1 SUBTRACTION"),
        "spine_t2": _f("SAG T2 C-SPINE", "SAG T2 L-SPINE", "SAG T2 TSE"),
        "spine_t1": _f("SAG T1 C-SPINE", "SAG T1 L-SPINE", "SAG T1 TSE"),
    },
))
_register(Family(
    name="ge_classic", vendor="GE", modality="MR", planes={"ax": "Ax", "sag": "Sag", "cor": "Cor"},
    post_tokens=_f(" +C", " POST", " +GAD", " C+", "+C"), pre_tokens=_f(" PRE", " -C"), contrast_tag_rate=0.8,
    protocol_style="study",
    names={
        "loc": _f("3-Plane Loc", "3 Plane Localizer", "Loc", "3pl loc SSFSE"),
        "cal": _f("ASSET Cal", "Calibration Scan"),
        "t1_se": _f("{pl} T1 SE{post}", "{pl} T1{post}", "{pl} SE T1{post}"),
        "t1_ir": _f("{pl} T1 FLAIR{post}", "{pl} T1FLAIR{post}"),
        "t1_3d": _f("Sag 3D T1 BRAVO{post}", "3D SPGR{post}", "Sag FSPGR 3D{post}", "BRAVO{post}"),
        "t1_3d_se": _f("Sag CUBE T1{post}", "3D T1 CUBE{post}"),
        "t1_gre_2d": _f("{pl} T1 SPGR{post}", "{pl} T1 GRE{post}"),
        "t2_tse": _f("{pl} T2 FSE", "{pl} T2 FRFSE", "{pl} T2{post}", "{pl} T2 PROPELLER"),
        "t2_3d": _f("Sag CUBE T2", "3D T2 CUBE"),
        "flair_2d": _f("{pl} T2 FLAIR{post}", "{pl} FLAIR{post}", "{pl} T2 FLAIR PROPELLER"),
        "flair_3d": _f("Sag 3D FLAIR{post}", "Sag CUBE FLAIR", "3D FLAIR{post}"),
        "dwi": _f("AX DWI 1000b", "Ax DWI", "AX DIFFUSION ASSET", "DWI B1000"),
        "adc": _f("Apparent Diffusion Coefficient (mm2/s)", "ADC (10^-6 mm2/s):", "AX DWI ADC"),
        "swi": _f("SWAN", "Ax SWAN", "AX SWAN 3D"),
        "swi_mip": _f("SWAN MinIP", "Ax SWAN minIP"),
        "swi_phase": _f("SWAN Phase", "SWAN Filt Phase"),
        "t2star": _f("{pl} T2* GRE", "{pl} GRE"),
        "stir": _f("Cor STIR", "{pl} T2 STIR"),
        "tof": _f("3D TOF COW", "Ax 3D TOF"),
        "tof_mip": _f("3D TOF COW MIP", "MRA COLLAPSE"),
        "perf": _f("Ax Perfusion", "PWI GRE EPI", "BRAIN PERFUSION"),
        "asl": _f("3D ASL", "Ax 3D pCASL"),
        "svs": _f("PROBE-P TE 144", "PROBE-SV 35"),
        "dti": _f("Ax DTI 25 dir", "DTI ASSET"),
        "fa": _f("FA", "Fractional Aniso."),
        "mpr": _f("Ax Reformat{post}", "Cor Reformat{post}", "REFORMAT"),
        "sub": _f("Subtraction", "Sub T1"),
        "spine_t2": _f("Sag T2 FSE", "Sag T2 C-Spine"),
        "spine_t1": _f("Sag T1 FSE", "Sag T1 C-Spine"),
    },
))
_register(Family(
    name="ge_site", vendor="GE", modality="MR", planes={"ax": "AX", "sag": "SAG", "cor": "COR"},
    post_tokens=_f(" POST GAD", " +C", " Gd", " POST", " W"), pre_tokens=_f(" WO", " PRE"), contrast_tag_rate=0.6,
    protocol_style="study",
    names={
        "loc": _f("3 PLANE LOC", "LOCALIZER", "SCOUT"),
        "cal": _f("ASSET CALIBRATION", "Cal"),
        "t1_se": _f("T1 {pl}{post}", "{pl} T1 FSE{post}"),
        "t1_ir": _f("T1 FLAIR {pl}{post}", "{pl} T1 FLAIR{post}"),
        "t1_3d": _f("AX T1 BRAVO{post}", "3D T1 BRAVO{post}", "BRAVO SAG{post}", "T1 3D FSPGR{post}", "BRAVO{post}", "SAG IR-FSPGR{post}"),
        "t1_3d_se": _f("CUBE T1 SAG{post}", "T1 CUBE{post}"),
        "t1_gre_2d": _f("T1 SPGR {pl}{post}",),
        "t2_tse": _f("T2 {pl}", "{pl} T2 PROPELLER", "T2 FSE {pl}"),
        "t2_3d": _f("CUBE T2", "T2 CUBE SAG"),
        "flair_2d": _f("FLAIR {pl}{post}", "T2 FLAIR {pl}", "{pl} FLAIR PROP"),
        "flair_3d": _f("CUBE FLAIR{post}", "3D FLAIR SAG", "FLAIR CUBE"),
        "dwi": _f("DWI", "DIFFUSION", "DWI {pl} b1000", "{pl} DWI ASSET"),
        "adc": _f("ADC", "{pl} ADC", "ADC map"),
        "swi": _f("SWAN", "SWAN {pl}", "SWI"),
        "swi_mip": _f("SWAN MINIP", "MinIP"),
        "swi_phase": _f("SWAN PHASE",),
        "t2star": _f("GRE {pl}", "T2* {pl}"),
        "stir": _f("STIR COR",),
        "tof": _f("TOF", "MRA TOF"),
        "tof_mip": _f("TOF MIP",),
        "perf": _f("PERFUSION", "DSC"),
        "asl": _f("ASL", "3D ASL"),
        "svs": _f("SPECTRO", "MRS PRESS"),
        "dti": _f("DTI", "DTI 32"),
        "fa": _f("FA MAP",),
        "mpr": _f("MPR {pl}{post}", "REFORMAT {pl}"),
        "sub": _f("SUB",),
        "spine_t2": _f("T2 SAG SPINE", "T2 SAG"),
        "spine_t1": _f("T1 SAG SPINE", "T1 SAG"),
    },
))
_register(Family(
    name="philips_classic", vendor="PHILIPS", modality="MR", planes={"ax": "tra", "sag": "sag", "cor": "cor"},
    post_tokens=_f("_GD", "_Gd", "+Gd", "_post"), pre_tokens=_f("_pre",), contrast_tag_rate=0.5,
    protocol_style="desc_suffix",
    names={
        "loc": _f("SURVEY", "Survey", "SmartSurvey"),
        "cal": _f("SENSE_REF", "Coil Survey", "Ref Scan"),
        "t1_se": _f("T1W_SE{post}", "T1W_SE_{pl}{post}", "T1W_TSE{post}"),
        "t1_ir": _f("T1W_IR{post}", "T1W_FLAIR{post}", "IR_T1W_{pl}{post}"),
        "t1_3d": _f("sT1W_3D_TFE{post}", "T1W_3D_TFE{post}", "3D_T1W_TFE{post}", "sT1W_3D_ISO{post}"),
        "t1_3d_se": _f("T1W_3D_VISTA{post}", "3D_T1_VISTA{post}"),
        "t1_gre_2d": _f("T1W_FFE{post}",),
        "t2_tse": _f("T2W_TSE", "T2W_TSE_{pl}", "T2W_TSE_{pl}{post}"),
        "t2_3d": _f("T2W_3D_VISTA", "3D_T2W_TSE"),
        "flair_2d": _f("FLAIR_longTR{post}", "T2W_FLAIR{post}", "FLAIR_{pl}"),
        "flair_3d": _f("3D_FLAIR{post}", "3D_FLAIR_VISTA", "VISTA_FLAIR{post}"),
        "dwi": _f("DWI_SENSE", "DWI", "DWI_{pl}", "Reg - DWI_SENSE"),
        "adc": _f("dADC", "DWI_SENSE_ADC", "dReg - DWI_SENSE_ADC", "ADC"),
        "swi": _f("sSWIp", "SWIp", "SWIp_{pl}"),
        "swi_mip": _f("mIP_SWIp", "SWIp_MinIP"),
        "swi_phase": _f("SWIp_Pha", "SWIp_phase"),
        "t2star": _f("T2_FFE", "T2*W_FFE"),
        "stir": _f("STIR_{pl}", "T2W_STIR"),
        "tof": _f("3D_TOF", "TOF_3D_multi"),
        "tof_mip": _f("MIP_3D_TOF", "MIP"),
        "perf": _f("PERFUSION", "DSC_perf", "dyn_eT1W"),
        "asl": _f("pCASL", "ASL_3D"),
        "svs": _f("SV_PRESS_144", "SV_PRESS_35"),
        "dti": _f("DTI_high_iso", "DTI_32"),
        "fa": _f("dFA", "DTI_FA"),
        "mpr": _f("MPR_{pl}{post}", "sT1W_3D_TFE_GD_MPR"),
        "sub": _f("SUB_T1", "Subtraction"),
        "spine_t2": _f("T2W_TSE_sag", "sT2W_TSE_spine"),
        "spine_t1": _f("T1W_TSE_sag", "sT1W_TSE_spine"),
    },
))
_register(Family(
    name="philips_site", vendor="PHILIPS", modality="MR", planes={"ax": "AX", "sag": "SAG", "cor": "COR"},
    post_tokens=_f(" +Gd", "_CE", " post", " GAD", " Gd"), pre_tokens=_f(" pre", " native"), contrast_tag_rate=0.6,
    protocol_style="desc_suffix",
    names={
        "loc": _f("Survey", "SURVEY_MST", "3-plane survey"),
        "cal": _f("SENSE ref", "Reference Scan"),
        "t1_se": _f("T1 SE {pl}{post}", "T1W {pl}{post}", "T1 TSE {pl}{post}"),
        "t1_ir": _f("T1 IR {pl}{post}", "T1 FLAIR {pl}{post}"),
        "t1_3d": _f("T1 3D TFE{post}", "3D T1W{post}", "T1 TFE ISO{post}", "3D TFE{post}"),
        "t1_3d_se": _f("T1 3D VISTA{post}", "VISTA T1{post}"),
        "t1_gre_2d": _f("T1 FFE {pl}{post}",),
        "t2_tse": _f("T2 TSE {pl}", "T2W {pl}", "T2 {pl}"),
        "t2_3d": _f("T2 3D VISTA", "3D T2W"),
        "flair_2d": _f("FLAIR {pl}{post}", "T2 FLAIR {pl}"),
        "flair_3d": _f("3D FLAIR VISTA{post}", "FLAIR 3D", "FLAIR VISTA ISO"),
        "dwi": _f("DWI {pl}", "DWI b1000", "Diffusion"),
        "adc": _f("ADC {pl}", "ADC", "DWI ADC"),
        "swi": _f("SWI", "SWIp {pl}"),
        "swi_mip": _f("SWI minIP",),
        "swi_phase": _f("SWI phase",),
        "t2star": _f("T2* FFE", "FFE {pl}"),
        "stir": _f("STIR {pl}",),
        "tof": _f("TOF 3D", "MRA COW"),
        "tof_mip": _f("TOF MIP",),
        "perf": _f("Perfusion", "DSC"),
        "asl": _f("ASL",),
        "svs": _f("Spectro SV", "MRS"),
        "dti": _f("DTI", "DTI 15dir"),
        "fa": _f("FA",),
        "mpr": _f("MPR {pl}{post}",),
        "sub": _f("Subtraction",),
        "spine_t2": _f("T2 SAG", "T2 TSE SAG spine"),
        "spine_t1": _f("T1 SAG", "T1 TSE SAG spine"),
    },
))
_register(Family(
    name="canon_mr", vendor="CANON", modality="MR", planes={"ax": "AX", "sag": "SAG", "cor": "COR"},
    post_tokens=_f("_CE", "+C", "_Gd", "_POST"), pre_tokens=_f("_PRE",), contrast_tag_rate=0.6,
    protocol_style="study",
    names={
        "loc": _f("Locator", "LOCATOR_3PL", "Loc"),
        "cal": _f("PAS_MAP", "Coil Map"),
        "t1_se": _f("T1_SE_{pl}{post}", "T1_{pl}{post}", "T1_FSE_{pl}{post}"),
        "t1_ir": _f("T1_FLAIR_{pl}{post}", "T1_IR_{pl}{post}"),
        "t1_3d": _f("3D_T1_FFE{post}", "T1_3D_MPRAGE{post}", "FE3D_T1{post}", "3D_MPRAGE{post}"),
        "t1_3d_se": _f("3D_T1_FSE{post}", "T1_3D_mVox{post}"),
        "t1_gre_2d": _f("T1_FE_{pl}{post}",),
        "t2_tse": _f("T2_FSE", "T2_FSE_{pl}", "T2_{pl}"),
        "t2_3d": _f("3D_T2_FSE", "T2_3D_mVox"),
        "flair_2d": _f("FLAIR_{pl}{post}", "FLAIR", "T2_FLAIR_{pl}"),
        "flair_3d": _f("3D_FLAIR{post}", "FLAIR_3D_mVox"),
        "dwi": _f("DWI_b1000", "DWI_{pl}", "DWI"),
        "adc": _f("ADC", "ADC_{pl}", "DWI_ADC"),
        "swi": _f("SWI", "SWI_{pl}", "FSBB"),
        "swi_mip": _f("SWI_minIP", "mIP"),
        "swi_phase": _f("SWI_PHASE",),
        "t2star": _f("T2*_{pl}", "FE_T2*"),
        "stir": _f("STIR_{pl}",),
        "tof": _f("TOF_MRA", "3D_TOF"),
        "tof_mip": _f("MIP_TOF",),
        "perf": _f("PERFUSION", "DSC_PWI"),
        "asl": _f("ASL", "pCASL"),
        "svs": _f("MRS_SV",),
        "dti": _f("DTI", "DTI_12axis"),
        "fa": _f("FA",),
        "mpr": _f("MPR_{pl}{post}",),
        "sub": _f("SUB",),
        "spine_t2": _f("T2_SAG_SPINE", "T2_FSE_SAG"),
        "spine_t1": _f("T1_SAG_SPINE", "T1_FSE_SAG"),
    },
))
_register(Family(
    name="euro_site", vendor="SIEMENS", modality="MR", planes={"ax": "tra", "sag": "sag", "cor": "kor"},
    post_tokens=_f("_KM", " KM", " GADO", " +Gado", "_nach_KM", " apres gado"), pre_tokens=_f(" nativ", " sans gado", " vor KM"),
    contrast_tag_rate=0.4, protocol_style="desc",
    names={
        "loc": _f("Localizer", "Lokalisierer", "Repérage"),
        "cal": _f("Normalisierung",),
        "t1_se": _f("T1 SE {pl}{post}", "T1 {pl}{post}", "T1_{pl}{post}"),
        "t1_ir": _f("T1 FLAIR {pl}{post}",),
        "t1_3d": _f("T1 3D{post}", "T1 MPRAGE{post}", "T1 3D iso{post}", "3D T1 {pl}{post}", "MPRAGE{post}"),
        "t1_3d_se": _f("T1 SPACE{post}", "T1 3D SE{post}"),
        "t1_gre_2d": _f("T1 FLASH {pl}{post}",),
        "t2_tse": _f("T2 TSE {pl}", "T2 {pl}", "T2_{pl}"),
        "t2_3d": _f("T2 3D iso", "T2 SPACE"),
        "flair_2d": _f("FLAIR {pl}{post}", "T2 FLAIR {pl}", "Flair_{pl}"),
        "flair_3d": _f("FLAIR 3D{post}", "3D FLAIR iso"),
        "dwi": _f("Diffusion {pl}", "DWI", "Diffusion b1000"),
        "adc": _f("ADC", "Diffusion ADC", "ADC {pl}"),
        "swi": _f("SWI", "SWI {pl}"),
        "swi_mip": _f("SWI mIP", "MinIP"),
        "swi_phase": _f("SWI Phase",),
        "t2star": _f("T2* {pl}", "T2 Hämo {pl}"),
        "stir": _f("STIR {pl}",),
        "tof": _f("TOF 3D", "Angio TOF"),
        "tof_mip": _f("MIP TOF", "Angio MIP"),
        "perf": _f("Perfusion", "Perf DSC"),
        "asl": _f("ASL",),
        "svs": _f("Spektroskopie", "Spectro"),
        "dti": _f("DTI", "Tenseur de diffusion"),
        "fa": _f("FA Karte", "carte FA"),
        "mpr": _f("MPR {pl}{post}", "Rekonstruktion {pl}"),
        "sub": _f("Subtraktion", "Soustraction"),
        "spine_t2": _f("T2 sag HWS", "T2 sag LWS", "T2 sag rachis"),
        "spine_t1": _f("T1 sag HWS", "T1 sag LWS", "T1 sag rachis"),
    },
))
_register(Family(
    name="ct_siemens", vendor="SIEMENS", modality="CT",
    names={
        "ct_brain": _f("Head 5.0 H31s", "Kopf 5.0 J40s", "Head 1.0 Hr38", "Cerebrum 4.0 H31s", "HeadSeq 4.8 H31s", "Head  4.0  J30s"),
        "ct_bone": _f("Head 2.0 H60s", "Head 1.0 Hr60", "Kopf 2.0 J70h", "Felsenbein 0.6 H70h"),
        "ct_scout": _f("Topogram 0.6 T20s", "Topogramm  0.6  T20s"),
        "ct_mpr": _f("Head 3.0 MPR cor", "Cor 3.0 H31s", "MPR Sag"),
        "ct_cta": _f("CTA Head 0.75 Hv36", "CTA 0.6 Bv36"),
        "ct_body": _f("Thorax 5.0 Br40", "Abdomen 3.0 Br36"),
        "ct_dose": _f("Patient Protocol", "Dose Report"),
    },
))
_register(Family(
    name="ct_ge", vendor="GE", modality="CT",
    names={
        "ct_brain": _f("Routine Brain", "5mm Std", "Brain 5.0 Std", "Helical 0.625 SOFT", "Axial 2.5 Standard"),
        "ct_bone": _f("Bone 1.25mm", "1.25mm Bone", "BONEPLUS 0.625"),
        "ct_scout": _f("Scout", "Scout 0 degree"),
        "ct_mpr": _f("Cor Reformat 3mm", "Sag Reformat"),
        "ct_cta": _f("CTA HEAD 0.625", "COW CTA"),
        "ct_body": _f("Chest 5mm", "Abd/Pel 3mm"),
        "ct_dose": _f("Dose Report", "Screen Save"),
    },
))
_register(Family(
    name="ct_philips", vendor="PHILIPS", modality="CT",
    names={
        "ct_brain": _f("Brain 5mm", "Brain UB 4mm", "Head 3mm UB", "iDose Brain"),
        "ct_bone": _f("Bone 2mm YC", "Bone", "Skull Bone 1mm"),
        "ct_scout": _f("Surview", "Survey"),
        "ct_mpr": _f("Brain cor 3mm", "MPR sagittal"),
        "ct_cta": _f("CTA brain 0.9", "Angio head"),
        "ct_body": _f("Chest 2mm", "Abdomen"),
        "ct_dose": _f("Dose Info",),
    },
))
_register(Family(
    name="ct_canon", vendor="CANON", modality="CT",
    names={
        "ct_brain": _f("Brain FC21 5mm", "HEAD 5.0 FC26", "Brain AIDR 5mm", "Head routine"),
        "ct_bone": _f("Bone FC30", "Bone FC81 1mm", "HEAD BONE 1.0"),
        "ct_scout": _f("Scanogram", "Scano"),
        "ct_mpr": _f("Cor MPR 4mm", "Sag MPR"),
        "ct_cta": _f("CTA Head", "CTA Circle of Willis"),
        "ct_body": _f("Chest", "Abdomen FC08"),
        "ct_dose": _f("Dose Info",),
    },
))

# --- v2 families: vendors and software versions the first corpus lacked.
_register(Family(
    name="siemens_xa", vendor="SIEMENS", modality="MR", planes={"ax": "tra", "sag": "sag", "cor": "cor"}, multiframe_rate=0.6,
    post_tokens=_f("_KM", "_post", "_Gd", "_CE"), pre_tokens=_f("_nativ", "_pre"), contrast_tag_rate=0.4,
    names={
        "loc": _f("AAHead_Scout", "AAHead_Scout_MPR_{pl}", "localizer_haste"),
        "cal": _f("AdjCoilSens", "Head_32_AutoAlign"),
        "t1_se": _f("t1_tse_{pl}_p2{post}", "t1_tse_dixon_{pl}_W{post}", "t1_se_{pl}_fs{post}"),
        "t1_ir": _f("t1_tirm_{pl}_p2{post}", "t1_tse_ir_{pl}{post}"),
        "t1_3d": _f("t1_mprage_sag_p3_iso{post}", "t1_mprage_sag_1mm_ND{post}", "t1_vibe_fs_{pl}{post}", "t1_mp2rage_sag_UNI{post}"),
        "t1_3d_se": _f("t1_space_sag_1mm_iso_DB{post}", "t1_spc_blackblood{post}"),
        "t1_gre_2d": _f("t1_fl2d_{pl}_p2{post}",),
        "t2_tse": _f("t2_tse_{pl}_p2", "t2_tse_{pl}_384", "t2_blade_{pl}", "t2_tse_dixon_{pl}_W", "t2_tse_{pl}_DRB"),
        "t2_3d": _f("t2_space_sag_1mm_ND", "t2_spc_sag_iso_DRB"),
        "flair_2d": _f("t2_tirm_{pl}_dark-fluid_p2{post}", "t2_flair_{pl}_p3", "t2_tirm_{pl}_DRB"),
        "flair_3d": _f("t2_space_dark-fluid_sag_1mm{post}", "t2_flair_3d_sag_DRB{post}"),
        "dwi": _f("ep2d_diff_b1000_{pl}_TRACEW", "ep2d_diff_tra_DRB_TRACEW", "resolve_diff_{pl}_TRACEW", "DWI_RESOLVE_TRACEW"),
        "adc": _f("ep2d_diff_b1000_{pl}_ADC", "ep2d_diff_tra_DRB_ADC", "resolve_diff_{pl}_ADC", "DWI_RESOLVE_ADC"),
        "swi": _f("SWI_Images", "swi_3d_tra_SWI", "t2_swi_tra_1.5mm_SWI"),
        "swi_mip": _f("mIP_Images(SW)", "swi_3d_tra_mIP", "MinIP_SWI"),
        "swi_phase": _f("Pha_Images", "Mag_Images", "swi_3d_tra_Pha"),
        "t2star": _f("t2_fl2d_{pl}_hemo_p2", "t2_medic_{pl}"),
        "stir": _f("t2_tirm_{pl}_STIR", "t2_stir_cor_p2"),
        "tof": _f("tof_3d_multi-slab_tra", "tof_3d_CS"),
        "tof_mip": _f("tof_3d_multi-slab_tra_MIP_TRA", "MIP_COR"),
        "perf": _f("ep2d_perf_p2", "ep2d_perf_DSC"),
        "asl": _f("tgse_pcasl_3d", "pcasl_3d_PASL"),
        "svs": _f("svs_se_135", "svs_se_30"),
        "dti": _f("ep2d_diff_mddw_30", "DTI_64dir"),
        "fa": _f("ep2d_diff_mddw_30_FA", "DTI_FA"),
        "mpr": _f("t1_mprage_sag_p3_iso_MPR_{pl}{post}", "MPR_{pl}{post}"),
        "sub": _f("t1_vibe_SUB", "SUB_MPRAGE"),
        "spine_t2": _f("t2_tse_sag_p2_spine", "t2_tse_sag_384"),
        "spine_t1": _f("t1_tse_sag_p2_spine", "t1_tse_sag_DRB"),
    },
))
_register(Family(
    name="ge_premier", vendor="GE", modality="MR", planes={"ax": "Ax", "sag": "Sag", "cor": "Cor"},
    post_tokens=_f(" +C", " POST", " W GAD", " C+"), pre_tokens=_f(" PRE", " WO"), contrast_tag_rate=0.7,
    protocol_style="study",
    names={
        "loc": _f("3Plane Loc SSFSE", "3-pl T2* FGRE S", "Localizer"),
        "cal": _f("Calibration", "ARC Cal"),
        "t1_se": _f("{pl} T1 FSE{post}", "{pl} T1 FLAIR AIR{post}", "{pl} T1 SE AIR{post}"),
        "t1_ir": _f("{pl} T1 FLAIR{post}", "{pl} T1 FLAIR DL{post}"),
        "t1_3d": _f("Sag T1 3D MPRAGE{post}", "Sag 3D BRAVO HyperSense{post}", "Sag T1 BRAVO DL{post}", "3D FSPGR{post}"),
        "t1_3d_se": _f("Sag CUBE T1 DL{post}", "Sag T1 CUBE FS{post}"),
        "t1_gre_2d": _f("{pl} T1 FSPGR{post}",),
        "t2_tse": _f("Ax T2 FRFSE", "{pl} T2 FSE AIR", "{pl} T2 PROPELLER DL", "{pl} T2 FSE HyperSense"),
        "t2_3d": _f("Sag CUBE T2 DL", "Sag T2 CUBE HyperSense"),
        "flair_2d": _f("{pl} T2 FLAIR DL{post}", "{pl} FLAIR AIR{post}", "{pl} T2 FLAIR PROP"),
        "flair_3d": _f("Sag CUBE FLAIR DL{post}", "Sag 3D T2 FLAIR{post}"),
        "dwi": _f("Ax DWI b1000 AIR", "Ax MUSE DWI", "Ax DWI FOCUS", "Ax DWI Tensor TRACE"),
        "adc": _f("ADC (10^-6 mm2/s):Ax DWI b1000", "Ax MUSE ADC", "Apparent Diffusion Coefficient (mm2/s)"),
        "swi": _f("Ax SWAN", "SWAN 3D", "Ax SWI"),
        "swi_mip": _f("Ax SWAN minIP", "SWAN mIP"),
        "swi_phase": _f("Ax SWAN Phase", "SWI Phase"),
        "t2star": _f("{pl} T2* GRE", "{pl} GRE MERGE"),
        "stir": _f("Cor STIR AIR", "{pl} STIR"),
        "tof": _f("Ax 3D TOF HyperSense", "3D TOF COW"),
        "tof_mip": _f("3D TOF MIP", "TOF COLLAPSE"),
        "perf": _f("Ax DSC Perfusion", "PWI"),
        "asl": _f("Ax 3D ASL eASL", "3D pCASL"),
        "svs": _f("PROBE-P 35", "PRESS 144"),
        "dti": _f("Ax DTI 30dir", "DTI HyperBand"),
        "fa": _f("FA map", "Fractional Aniso."),
        "mpr": _f("Ax MPR{post}", "Cor MPR{post}"),
        "sub": _f("SUB", "Subtract"),
        "spine_t2": _f("Sag T2 FRFSE", "Sag T2 FSE AIR"),
        "spine_t1": _f("Sag T1 FSE AIR", "Sag T1 FLAIR"),
    },
))
_register(Family(
    name="hitachi_fuji", vendor="HITACHI", modality="MR", planes={"ax": "AX", "sag": "SAG", "cor": "COR"},
    post_tokens=_f("_Gd", "+Gd", " CE", "_C+"), pre_tokens=_f("_pre",), contrast_tag_rate=0.5,
    names={
        "loc": _f("Scanogram", "3P-Scano", "Pilot"),
        "cal": _f("Coil Sens", "RAPID Cal"),
        "t1_se": _f("T1WI_SE_{pl}{post}", "T1W SE {pl}{post}", "T1WI{post}"),
        "t1_ir": _f("T1WI_IR{post}", "T1-FLAIR {pl}{post}"),
        "t1_3d": _f("3D-RSSG T1{post}", "T1 3D GE{post}", "3D_T1WI_RSSG{post}"),
        "t1_3d_se": _f("isoFSE T1{post}",),
        "t1_gre_2d": _f("T1WI_GE{post}",),
        "t2_tse": _f("T2WI_FSE_{pl}", "T2WI {pl}", "T2W FSE"),
        "t2_3d": _f("isoFSE T2", "3D T2WI"),
        "flair_2d": _f("FLAIR_{pl}{post}", "FLAIR{post}", "T2-FLAIR {pl}"),
        "flair_3d": _f("3D FLAIR isoFSE{post}",),
        "dwi": _f("DWI_b1000", "DWI {pl}", "DWI EPI"),
        "adc": _f("ADC map", "DWI_b1000_ADC", "ADC"),
        "swi": _f("BSI", "BSI_{pl}", "SWI"),
        "swi_mip": _f("BSI MinIP", "BSI_mIP"),
        "swi_phase": _f("BSI Phase", "BSI_PHA"),
        "t2star": _f("T2*WI", "T2*WI_GE_{pl}"),
        "stir": _f("STIR_{pl}", "STIR"),
        "tof": _f("MRA TOF", "3D TOF"),
        "tof_mip": _f("MRA MIP", "TOF MIP"),
        "perf": _f("Perfusion DSC", "PWI"),
        "asl": _f("ASL", "3D ASL"),
        "svs": _f("MRS SV", "SVS PRESS"),
        "dti": _f("DTI", "DTI 12axis"),
        "fa": _f("FA", "DTI_FA"),
        "mpr": _f("MPR {pl}{post}", "REFORMAT{post}"),
        "sub": _f("SUB", "Subtraction"),
        "spine_t2": _f("T2WI_SAG_Spine", "T2W SAG"),
        "spine_t1": _f("T1WI_SAG_Spine", "T1W SAG"),
    },
))
_register(Family(
    name="united_imaging", vendor="UIH", modality="MR", planes={"ax": "tra", "sag": "sag", "cor": "cor"},
    post_tokens=_f("_+C", "_post", "_enhance", "_C"), pre_tokens=_f("_pre",), contrast_tag_rate=0.5,
    names={
        "loc": _f("localizer", "loc_3plane"),
        "cal": _f("calibration", "pre_scan"),
        "t1_se": _f("t1_fse_{pl}{post}", "t1_se_{pl}{post}"),
        "t1_ir": _f("t1_flair_{pl}{post}", "t1_ir_fse_{pl}{post}"),
        "t1_3d": _f("t1_gre_fsp_3d_sag_iso{post}", "t1_mprage_sag{post}", "t1_gre_3d_{pl}{post}"),
        "t1_3d_se": _f("t1_matrix_3d_sag{post}",),
        "t1_gre_2d": _f("t1_gre_fsp_{pl}{post}",),
        "t2_tse": _f("t2_fse_{pl}", "t2_fse_{pl}_fs", "t2_fse_{pl}_ACS"),
        "t2_3d": _f("t2_matrix_3d_sag", "t2_fse_3d_sag_iso"),
        "flair_2d": _f("t2_flair_{pl}{post}", "t2_flair_fse_{pl}", "flair_{pl}_ACS"),
        "flair_3d": _f("t2_flair_3d_sag{post}", "t2_matrix_flair_3d"),
        "dwi": _f("dwi_{pl}_b1000", "dwi_epi_{pl}", "dwi_b0_b1000"),
        "adc": _f("dwi_{pl}_b1000_ADC", "ADC", "dwi_epi_ADC"),
        "swi": _f("swi_3d_{pl}", "SWI_{pl}", "swi_mag"),
        "swi_mip": _f("swi_3d_minIP", "SWI_mIP"),
        "swi_phase": _f("swi_3d_pha", "SWI_phase"),
        "t2star": _f("t2star_gre_{pl}", "t2star_me_{pl}"),
        "stir": _f("t2_stir_{pl}", "stir_cor"),
        "tof": _f("tof_3d_{pl}", "tof_3d_mra"),
        "tof_mip": _f("tof_3d_MIP", "MRA_MIP"),
        "perf": _f("perf_dsc_{pl}", "dsc_perfusion"),
        "asl": _f("asl_3d_pcasl", "pcasl_3d"),
        "svs": _f("svs_press_144", "svs_press_30"),
        "dti": _f("dti_30dir", "dti_epi_{pl}"),
        "fa": _f("dti_FA", "FA"),
        "mpr": _f("mpr_{pl}{post}", "t1_mpr_{pl}{post}"),
        "sub": _f("sub_t1", "subtraction"),
        "spine_t2": _f("t2_fse_sag_spine", "t2_fse_sag"),
        "spine_t1": _f("t1_fse_sag_spine", "t1_fse_sag"),
    },
))
_register(Family(
    name="ct_kernels", vendor="SIEMENS", modality="CT",
    names={
        "ct_brain": _f("Head 5.0 Hr38", "Kopf 4.0 J40s", "Brain Qr40 3mm", "Head Br36 5mm", "Cerebrum 5.0 H31s", "HEAD_SEQ 4.8 H31s"),
        "ct_bone": _f("Head 1.0 Hr64", "Bone 0.6 J70h", "Schaedel Knochen 1.0 Hr60", "Bone Br64 1mm"),
        "ct_scout": _f("Topogram 0.6 T20s", "Topogram", "Topo"),
        "ct_mpr": _f("Cor 3.0 Hr38 MPR", "MPR Range[1]", "Sag MPR 2mm"),
        "ct_cta": _f("CTA Kopf 0.75 Bv36", "Angio Head 0.6 Hv36"),
        "ct_body": _f("Thorax 3.0 Br40", "Abdomen 5.0 Br36"),
        "ct_dose": _f("Patient Protocol", "Dose Report"),
    },
))

#: Hold-out folds: every fold removes whole naming families (two MR, one CT)
#: from training. Each vendor keeps at least one MR family in training in every
#: fold except Canon, whose only MR family is unseen when it is held out.
HOLDOUT_FOLDS: tuple[tuple[str, ...], ...] = (
    ("siemens_syngo", "philips_site", "ct_ge"),
    ("ge_classic", "canon_mr", "ct_philips"),
    ("philips_classic", "euro_site", "ct_siemens"),
    ("siemens_site", "ge_site", "ct_canon"),
    ("siemens_xa", "hitachi_fuji", "ct_kernels"),
    ("ge_premier", "united_imaging"),
)


def vendor_folds() -> tuple[tuple[str, ...], ...]:
    """Leave-one-vendor-out folds: every family (MR and CT) of one vendor held out together."""
    by_vendor: dict[str, list[str]] = {}
    for name, family in FAMILIES.items():
        by_vendor.setdefault(family.vendor, []).append(name)
    return tuple(tuple(names) for _, names in sorted(by_vendor.items()))

_MODELS = {
    "SIEMENS": ("Skyra", "Prisma", "Avanto", "Aera", "Vida", "SOMATOM Definition AS+", "SOMATOM Force"),
    "GE": ("SIGNA Premier", "DISCOVERY MR750", "Optima MR450w", "SIGNA Artist", "Revolution CT", "LightSpeed VCT"),
    "PHILIPS": ("Ingenia", "Achieva", "Ingenia Elition X", "iCT 256", "Brilliance 64"),
    "CANON": ("Vantage Orian", "Vantage Galan 3T", "Aquilion ONE", "Aquilion Prime"),
    "HITACHI": ("ECHELON Smart", "OASIS", "ECHELON OVAL"),
    "UIH": ("uMR 780", "uMR 570", "uMR Omega"),
}
_MANUFACTURER_SPELLING = {
    "SIEMENS": ("SIEMENS", "Siemens Healthineers", "SIEMENS "),
    "GE": ("GE MEDICAL SYSTEMS", "GE Healthcare"),
    "PHILIPS": ("Philips Medical Systems", "Philips", "Philips Healthcare"),
    "CANON": ("CANON_MEC", "TOSHIBA_MEC", "Canon Medical Systems"),
    "HITACHI": ("Hitachi Medical Corporation", "HITACHI", "FUJIFILM Healthcare Corporation"),
    "UIH": ("UIH", "United Imaging Healthcare"),
}

#: Vendors without their own habits below borrow another vendor's (ImageType
#: spellings, ScanOptions, b-value tags): Hitachi/Fujifilm write ImageType
#: like Canon, United Imaging like Siemens.
_STYLE = {"HITACHI": "CANON", "UIH": "SIEMENS"}


class _Gen:
    """Draws helpers bound to one RNG, so every call site stays short."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng

    def u(self, low: float, high: float, nd: int = 2) -> float:
        return round(float(self.rng.uniform(low, high)), nd)

    def i(self, low: int, high: int) -> int:
        return int(self.rng.integers(low, high + 1))

    def pick(self, options: Sequence[str]) -> str:
        return options[int(self.rng.integers(0, len(options)))]

    def p(self, prob: float) -> bool:
        return bool(self.rng.random() < prob)

    def uid(self) -> str:
        return "2.25." + str(int.from_bytes(self.rng.bytes(15), "big"))


def _image_type(vendor: str, arch: str, g: _Gen) -> list[str]:
    """ImageType as each vendor tends to write it for this archetype."""
    derived = {
        "adc": "ADC", "swi_mip": "MNIP", "tof_mip": "MIP", "fa": "FA", "mpr": "MPR", "sub": "SUBTRACT",
    }
    if arch == "adc":
        return {"SIEMENS": ["DERIVED", "PRIMARY", "DIFFUSION", "ADC", "ND", "NORM"], "GE": ["DERIVED", "PRIMARY", "ADC"],
                "PHILIPS": ["DERIVED", "PRIMARY", "ADC", "ADC"], "CANON": ["DERIVED", "SECONDARY", "ADC"]}[vendor]
    if arch == "dwi":
        return {"SIEMENS": ["ORIGINAL", "PRIMARY", "DIFFUSION", "TRACEW", "ND", "NORM"], "GE": ["ORIGINAL", "PRIMARY", "OTHER"],
                "PHILIPS": ["ORIGINAL", "PRIMARY", "M_SE", "M", "SE"], "CANON": ["ORIGINAL", "PRIMARY", "OTHER"]}[vendor]
    if arch == "swi":
        return {"SIEMENS": ["DERIVED", "PRIMARY", "M", "SWI", "ND", "NORM"], "GE": ["ORIGINAL", "PRIMARY", "OTHER"],
                "PHILIPS": ["ORIGINAL", "PRIMARY", "M_FFE", "M", "FFE"], "CANON": ["ORIGINAL", "PRIMARY", "OTHER"]}[vendor]
    if arch == "swi_phase":
        return ["ORIGINAL", "PRIMARY", "P", "ND"] if vendor != "PHILIPS" else ["ORIGINAL", "PRIMARY", "P_FFE", "P", "FFE"]
    if arch == "loc":
        if vendor == "GE" or g.p(0.3):
            return ["ORIGINAL", "PRIMARY", "LOCALIZER"]
        return {"SIEMENS": ["ORIGINAL", "PRIMARY", "M", "NORM", "DIS2D"], "PHILIPS": ["ORIGINAL", "PRIMARY", "M_FFE", "M", "FFE"],
                "CANON": ["ORIGINAL", "PRIMARY", "OTHER"], "GE": ["ORIGINAL", "PRIMARY", "LOCALIZER"]}[vendor]
    if arch in derived:
        second = "SECONDARY" if arch in ("mpr", "tof_mip") else "PRIMARY"
        return ["DERIVED", second, derived[arch]] + (["ND"] if vendor == "SIEMENS" else [])
    if arch == "ct_scout":
        return ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    if arch == "ct_mpr":
        return ["DERIVED", "SECONDARY", g.pick(("MPR", "REFORMATTED", "CPR"))]
    if arch == "ct_dose":
        return ["DERIVED", "SECONDARY", "OTHER", "SCREEN SAVE"] if g.p(0.5) else ["ORIGINAL", "PRIMARY", "DOSE INFO"]
    if arch.startswith("ct_"):
        return ["ORIGINAL", "PRIMARY", "AXIAL"]
    if vendor == "GE" and g.p(0.25):
        # Older GE MR software (Signa LX/Excite/HDx) writes the scan plane as the third value.
        return ["ORIGINAL", "PRIMARY", g.pick(("AXIAL", "AXIAL", "OBLIQUE", "SAGITTAL", "CORONAL"))]
    if vendor == "SIEMENS" and g.p(0.3):
        return ["ORIGINAL", "PRIMARY", "M", "NORM", "DIS2D"]
    return {"SIEMENS": ["ORIGINAL", "PRIMARY", "M", "ND", "NORM"], "GE": ["ORIGINAL", "PRIMARY", "OTHER"],
            "PHILIPS": ["ORIGINAL", "PRIMARY", "M_SE", "M", "SE"], "CANON": ["ORIGINAL", "PRIMARY", "OTHER"]}[vendor]


def _mr_physics(arch: str, vendor: str, field_t: float, g: _Gen) -> dict[str, object]:
    """Acquisition parameters (ms, degrees, mm) for one MR archetype at one field strength."""
    hi = field_t >= 2.5
    d: dict[str, object] = {}
    if arch in ("loc",):
        d.update(ScanningSequence="GR", SequenceVariant="SP", MRAcquisitionType="2D", RepetitionTime=g.u(5, 20), EchoTime=g.u(1.2, 5),
                 FlipAngle=g.u(15, 40, 0), SliceThickness=g.u(5, 10, 1), count=g.pick(("3", "5", "9", "15", "15", "27")))
    elif arch == "cal":
        d.update(ScanningSequence="GR", SequenceVariant="SP", MRAcquisitionType=g.pick(("2D", "3D")), RepetitionTime=g.u(3, 150),
                 EchoTime=g.u(0.8, 2.5), FlipAngle=g.u(3, 10, 0), SliceThickness=g.u(6, 15, 1), count=g.i(20, 64), Rows=g.pick(("32", "64")))
    elif arch == "t1_se":
        d.update(ScanningSequence="SE", SequenceVariant=g.pick(("SK", "SK\\SP", "SP", "SP\\OSP", "SK\\SP\\OSP")), MRAcquisitionType="2D",
                 RepetitionTime=g.u(400, 750) if not hi else g.u(450, 850), EchoTime=g.u(7, 20), FlipAngle=g.pick(("90", "90", "150", "70")),
                 SliceThickness=g.u(3, 6, 1), count=g.i(18, 32), EchoTrainLength=g.i(1, 5))
    elif arch == "t1_ir":
        d.update(ScanningSequence=g.pick(("SE\\IR", "IR")), SequenceVariant="SK\\SP", MRAcquisitionType="2D",
                 RepetitionTime=g.u(1700, 2600), EchoTime=g.u(7, 25), InversionTime=g.u(680, 1050), FlipAngle=g.pick(("90", "150", "120")),
                 SliceThickness=g.u(4, 6, 1), count=g.i(18, 32), EchoTrainLength=g.i(5, 10))
    elif arch == "t1_3d":
        if vendor == "SIEMENS":
            d.update(ScanningSequence="GR\\IR", SequenceVariant="SK\\SP\\MP", RepetitionTime=g.u(1700, 2400), EchoTime=g.u(2, 3.6),
                     InversionTime=g.u(850, 1100), FlipAngle=g.u(7, 10, 0))
        elif vendor == "GE":
            d.update(ScanningSequence=g.pick(("GR", "GR\\IR")), SequenceVariant="SS\\SK", RepetitionTime=g.u(5.5, 10), EchoTime=g.u(2, 4.2),
                     InversionTime=g.u(400, 650), FlipAngle=g.u(10, 15, 0))
        elif vendor == "PHILIPS":
            d.update(ScanningSequence="GR", SequenceVariant=g.pick(("SK\\MP", "MP", "SP")), RepetitionTime=g.u(6, 9.5), EchoTime=g.u(2.8, 4.6),
                     FlipAngle=g.u(8, 9, 0))
            if g.p(0.5):
                d["InversionTime"] = g.u(800, 1100)
        else:
            d.update(ScanningSequence="GR\\IR", SequenceVariant="SP\\MP", RepetitionTime=g.u(6, 11), EchoTime=g.u(2.4, 4.2),
                     InversionTime=g.u(750, 1000), FlipAngle=g.u(8, 14, 0))
        d.update(MRAcquisitionType="3D", SliceThickness=g.u(0.8, 1.3, 2), count=g.i(150, 220))
    elif arch == "t1_3d_se":
        d.update(ScanningSequence="SE", SequenceVariant="SK\\SP", MRAcquisitionType="3D", RepetitionTime=g.u(500, 800), EchoTime=g.u(8, 28),
                 FlipAngle=g.pick(("90", "120", "150")), SliceThickness=g.u(0.8, 1.3, 2), count=g.i(150, 200), EchoTrainLength=g.i(20, 45))
    elif arch == "t1_gre_2d":
        d.update(ScanningSequence="GR", SequenceVariant="SP", MRAcquisitionType="2D", RepetitionTime=g.u(170, 350), EchoTime=g.u(2, 5),
                 FlipAngle=g.u(60, 80, 0), SliceThickness=g.u(4, 6, 1), count=g.i(18, 30))
    elif arch in ("t2_tse", "spine_t2"):
        d.update(ScanningSequence="SE", SequenceVariant=g.pick(("SK", "SK\\SP", "SK\\OSP")), MRAcquisitionType="2D",
                 RepetitionTime=g.u(2500, 7500), EchoTime=g.u(78, 125), FlipAngle=g.pick(("90", "150", "160", "125")),
                 SliceThickness=g.u(3, 5.5, 1), count=g.i(19, 40), EchoTrainLength=g.i(8, 28))
    elif arch == "spine_t1":
        d.update(ScanningSequence="SE", SequenceVariant="SK\\SP", MRAcquisitionType="2D", RepetitionTime=g.u(400, 750), EchoTime=g.u(7, 14),
                 FlipAngle=g.pick(("90", "150")), SliceThickness=g.u(3, 4, 1), count=g.i(11, 17), EchoTrainLength=g.i(2, 6))
    elif arch == "t2_3d":
        d.update(ScanningSequence="SE", SequenceVariant="SK\\SP", MRAcquisitionType="3D", RepetitionTime=g.u(2500, 3200), EchoTime=g.u(250, 450),
                 FlipAngle=g.pick(("90", "120", "150")), SliceThickness=g.u(0.8, 1.3, 2), count=g.i(150, 200), EchoTrainLength=g.i(100, 260))
    elif arch == "flair_2d":
        d.update(ScanningSequence=g.pick(("SE\\IR", "IR")), SequenceVariant="SK\\SP", MRAcquisitionType="2D",
                 RepetitionTime=g.u(6500, 11000), EchoTime=g.u(78, 145), InversionTime=g.u(2100, 2850), FlipAngle=g.pick(("90", "150", "120")),
                 SliceThickness=g.u(3, 5.5, 1), count=g.i(19, 36), EchoTrainLength=g.i(12, 30))
    elif arch == "flair_3d":
        d.update(ScanningSequence="SE\\IR", SequenceVariant="SK\\SP\\MP", MRAcquisitionType="3D",
                 RepetitionTime=g.u(4800, 8000), EchoTime=g.u(90, 450), InversionTime=g.u(1600, 2500), FlipAngle=g.pick(("90", "120")),
                 SliceThickness=g.u(0.8, 1.3, 2), count=g.i(150, 200), EchoTrainLength=g.i(120, 260))
    elif arch in ("dwi", "adc", "dti", "fa"):
        d.update(ScanningSequence="EP", SequenceVariant=g.pick(("SK\\SP", "SK\\SS", "NONE")), MRAcquisitionType="2D",
                 RepetitionTime=g.u(2800, 9500), EchoTime=g.u(50, 105), FlipAngle="90", SliceThickness=g.u(3, 5.5, 1))
        slices = g.i(19, 45)
        if arch == "dwi":
            d["count"] = slices * g.pick((1, 2, 2, 3))
            d["b"] = float(g.pick((1000, 1000, 1000, 800, 1500, 2000)))
        elif arch == "adc":
            d["count"] = slices
            d["b"] = float(g.pick((0, 1000))) if g.p(0.5) else None
        elif arch == "dti":
            d["count"] = slices * g.i(16, 65)
            d["b"] = 1000.0
        else:
            d["count"] = slices
    elif arch in ("swi", "swi_mip", "swi_phase"):
        d.update(ScanningSequence="GR", SequenceVariant=g.pick(("SP", "SS\\SP", "SK\\SP")), MRAcquisitionType="3D",
                 RepetitionTime=g.u(25, 52), EchoTime=g.u(18, 40), FlipAngle=g.u(12, 20, 0), SliceThickness=g.u(1.2, 3, 1), count=g.i(48, 144))
        if arch == "swi_mip":
            d["count"] = g.i(20, 60)
    elif arch == "t2star":
        d.update(ScanningSequence="GR", SequenceVariant="SP", MRAcquisitionType="2D", RepetitionTime=g.u(450, 900), EchoTime=g.u(14, 27),
                 FlipAngle=g.u(18, 25, 0), SliceThickness=g.u(4, 6, 1), count=g.i(19, 30))
    elif arch == "stir":
        d.update(ScanningSequence=g.pick(("IR", "SE\\IR")), SequenceVariant="SK\\SP", MRAcquisitionType="2D", RepetitionTime=g.u(3500, 6000),
                 EchoTime=g.u(30, 75), InversionTime=g.u(130, 230), FlipAngle=g.pick(("90", "150")), SliceThickness=g.u(3, 5, 1), count=g.i(15, 30))
    elif arch in ("tof", "tof_mip"):
        d.update(ScanningSequence="GR", SequenceVariant=g.pick(("SK\\SP", "SP\\OSP", "SS\\SP\\TOF")), MRAcquisitionType="3D",
                 RepetitionTime=g.u(18, 28), EchoTime=g.u(3, 7), FlipAngle=g.u(15, 25, 0), SliceThickness=g.u(0.5, 0.9, 2), count=g.i(120, 220),
                 ScanOptions="TOF")
        if arch == "tof_mip":
            d["count"] = g.i(10, 40)
    elif arch == "perf":
        d.update(ScanningSequence="EP", SequenceVariant="SK\\SS", MRAcquisitionType="2D", RepetitionTime=g.u(1200, 1900), EchoTime=g.u(25, 45),
                 FlipAngle=g.u(60, 90, 0), SliceThickness=g.u(4, 6, 1), count=g.i(19, 25) * g.i(40, 60), NumberOfTemporalPositions=g.i(40, 60))
    elif arch == "fmri":
        d.update(ScanningSequence="EP", SequenceVariant=g.pick(("SK\\SS", "SK", "NONE")), MRAcquisitionType="2D",
                 RepetitionTime=g.u(700, 3000), EchoTime=g.u(22, 40), FlipAngle=g.u(50, 90, 0), SliceThickness=g.u(2, 4, 1))
        frames = g.i(100, 400)
        d["count"] = g.i(30, 72) * frames if g.p(0.6) else frames  # one mosaic per volume on Siemens
        d["NumberOfTemporalPositions"] = frames
    elif arch == "asl":
        d.update(ScanningSequence=g.pick(("EP", "SE", "GR")), SequenceVariant="SK", MRAcquisitionType=g.pick(("2D", "3D")),
                 RepetitionTime=g.u(4000, 5200), EchoTime=g.u(9, 25), InversionTime=g.u(1500, 2025), FlipAngle="90",
                 SliceThickness=g.u(3, 6, 1), count=g.i(10, 80))
    elif arch == "svs":
        d.update(ScanningSequence="SE", SequenceVariant="NONE", MRAcquisitionType="3D" if g.p(0.3) else "2D", RepetitionTime=g.u(1500, 2000),
                 EchoTime=float(g.pick((30, 35, 135, 144))), FlipAngle="90", SliceThickness=g.u(10, 20, 0), count=1, Rows=g.pick(("1", "16")))
    elif arch in ("mpr", "sub"):
        base = _mr_physics("t1_3d", vendor, field_t, g) if (arch == "sub" or g.p(0.6)) else _mr_physics("flair_3d", vendor, field_t, g)
        d.update(base)
        d["SliceThickness"] = g.u(2, 5, 1) if arch == "mpr" else base["SliceThickness"]
        d["count"] = g.i(30, 70) if arch == "mpr" else base["count"]
    else:  # pragma: no cover - every archetype is listed above
        raise ValueError(arch)
    return d


_SCAN_OPTIONS = {
    "SIEMENS": ("", "PFP", "IR", "SAT1", "FS", "PFP\\FS"),
    "GE": ("FILTERED_GEMS\\FAST_GEMS", "FAST_GEMS\\ACC_GEMS", "EPI_GEMS\\ACC_GEMS", "SEQ_GEMS\\FILTERED_GEMS", "IR_GEMS",
           "FAST_GEMS", "FAST_GEMS\\SAT_GEMS", "SAT_GEMS\\EDR_GEMS", "FAST_GEMS\\EDR_GEMS", "FAST_GEMS\\SAT_GEMS\\EDR_GEMS"),
    "PHILIPS": ("", "FS", "PFP", "OTHER"),
    "CANON": ("", "FC", "SP"),
}


def _mr_dataset(family: Family, arch: str, post: bool, agent: bool, study: dict[str, object], g: _Gen) -> tuple[Dataset, int]:
    """Header of one MR series and its instance count."""
    vendor = _STYLE.get(family.vendor, family.vendor)
    field_t = float(study["field"])  # type: ignore[arg-type]
    phys = _mr_physics(arch, vendor, field_t, g)
    if arch not in ("loc", "cal", "svs") and g.p(0.12):
        # Limited coverage (a few slices through a lesion, a short test
        # protocol) or a series classified before all its images arrived: the
        # instance count must not be what makes a T1 a T1.
        phys["count"] = g.i(2, max(2, int(phys["count"]) // 2))  # type: ignore[call-overload]
    if "EchoTrainLength" not in phys and g.p(0.75):
        # Scanners write EchoTrainLength for gradient-echo and EPI series too (1, or the EPI factor).
        phys["EchoTrainLength"] = 1 if phys.get("ScanningSequence") != "EP" or g.p(0.5) else g.i(32, 128)
    ds = Dataset()
    ds.SOPClassUID = MR_IMAGE_STORAGE
    ds.Modality = "MR"
    ds.ImageType = _image_type(vendor, arch, g)
    ds.MagneticFieldStrength = str(study["field_str"])
    for key in ("ScanningSequence", "SequenceVariant", "MRAcquisitionType", "RepetitionTime", "EchoTime", "InversionTime", "FlipAngle",
                "SliceThickness", "EchoTrainLength", "NumberOfTemporalPositions", "ScanOptions"):
        if key in phys and phys[key] is not None:
            setattr(ds, key, phys[key])
    if "ScanOptions" not in ds:
        opt = g.pick(_SCAN_OPTIONS[vendor])
        if opt:
            ds.ScanOptions = opt
    if arch in ("loc", "cal", "svs") or g.p({"GE": 0.85}.get(vendor, 0.35)):
        ds.ImagesInAcquisition = str(phys["count"])
    if arch in ("dwi", "adc", "perf", "dti", "fa", "asl"):
        matrix = g.pick(("128", "160", "192", "256", "96"))
    else:
        matrix = g.pick(("256", "256", "320", "384", "512", "448", "192", "224", "288"))
    if g.p(0.08):
        # Fast/low-resolution protocols, downsampled exports and test data: a
        # small matrix says little about the contrast.
        matrix = g.pick(("32", "48", "64", "96", "128"))
    ds.Rows = int(phys.get("Rows", matrix))  # type: ignore[arg-type]
    ds.Columns = int(phys.get("Rows", matrix))  # type: ignore[arg-type]
    ds.PixelSpacing = [round(g.u(180.0, 260.0, 0) / max(int(ds.Rows), 1), 4)] * 2
    if arch != "svs" and g.p(0.85):
        # Display window: written on almost every MR image, its level depends
        # on the scanner's scaling rather than on the contrast.
        center = g.u(100, 2500, 0)
        ds.WindowCenter = str(int(center))
        ds.WindowWidth = str(int(center * g.u(1.2, 3.0)))
    if "SliceThickness" in phys and phys.get("MRAcquisitionType") == "2D" and g.p(0.7):
        ds.SpacingBetweenSlices = round(float(phys["SliceThickness"]) * g.u(1.0, 1.3), 2)  # type: ignore[arg-type]
    if arch != "svs":
        ds.PixelBandwidth = g.u(100, 2000, 0) if arch not in ("dwi", "adc", "dti", "perf") else g.u(1000, 2500, 0)
    b = phys.get("b")
    if b is not None and g.p(0.9):
        if vendor == "SIEMENS":
            ds.add_new((0x0019, 0x0010), "LO", "SIEMENS MR HEADER")
            ds.add_new((0x0019, 0x100C), "IS", str(int(b)))  # type: ignore[arg-type]
        elif vendor == "GE":
            ds.add_new((0x0043, 0x0010), "LO", "GEMS_PARM_01")
            ds.add_new((0x0043, 0x1039), "IS", [str(int(b) + 1_000_000_000), "8", "0", "0"])  # type: ignore[arg-type]
        elif vendor == "PHILIPS":
            ds.add_new((0x2001, 0x0010), "LO", "Philips Imaging DD 001")
            ds.add_new((0x2001, 0x1003), "FL", float(b))  # type: ignore[arg-type]
        if vendor == "CANON" or g.p(0.3):
            ds.add_new((0x0018, 0x9087), "FD", float(b))  # type: ignore[arg-type]
    if agent:
        ds.ContrastBolusAgent = g.pick(("Gadovist", "DOTAREM", "MultiHance", "Gd-DTPA", "gadobutrol 7.5ml", "ProHance", "CLARISCAN", "GADO"))
    ds.BodyPartExamined = g.pick(("SPINE", "CSPINE", "LSPINE")) if arch.startswith("spine") else g.pick(("HEAD", "BRAIN", "HEAD", ""))
    return ds, int(phys["count"])  # type: ignore[arg-type]


def _ct_dataset(family: Family, arch: str, study: dict[str, object], g: _Gen) -> tuple[Dataset, int]:
    """Header of one CT series and its instance count."""
    vendor = family.vendor
    ds = Dataset()
    ds.SOPClassUID = CT_IMAGE_STORAGE if arch != "ct_dose" or g.p(0.5) else SECONDARY_CAPTURE
    ds.Modality = "CT"
    ds.ImageType = _image_type(vendor, arch, g)
    kernels_soft = {"SIEMENS": ("H31s", "J40s", "Hr38", "H30s", "J30s"), "GE": ("STANDARD", "SOFT", "STND"), "PHILIPS": ("UB", "UC", "B", "C"),
                    "CANON": ("FC21", "FC26", "FC20")}[vendor]
    kernels_bone = {"SIEMENS": ("H60s", "Hr60", "J70h", "H70h"), "GE": ("BONE", "BONEPLUS", "DETAIL"), "PHILIPS": ("YC", "D", "E", "YB"),
                    "CANON": ("FC30", "FC81", "FC35")}[vendor]
    ds.KVP = g.pick(("100", "120", "120", "140", "80"))
    body = g.pick(("HEAD", "HEAD", "BRAIN", "")) if arch != "ct_body" else g.pick(("CHEST", "ABDOMEN", "PELVIS"))
    if body:
        ds.BodyPartExamined = body
    count = 1
    if arch == "ct_brain":
        thick = g.pick(("5", "5", "4", "3", "2.5", "1", "0.625", "0.5", "1.25"))
        ds.SliceThickness = thick
        count = int(150 / float(thick) * g.u(0.8, 1.2))
        ds.ConvolutionKernel = g.pick(kernels_soft)
        ds.WindowCenter, ds.WindowWidth = g.pick(("40", "35", "40", "30")), g.pick(("80", "100", "120", "90"))
    elif arch == "ct_bone":
        thick = g.pick(("2", "1", "0.625", "1.25", "0.6", "3"))
        ds.SliceThickness = thick
        count = int(150 / float(thick) * g.u(0.8, 1.2))
        ds.ConvolutionKernel = g.pick(kernels_bone)
        ds.WindowCenter, ds.WindowWidth = g.pick(("400", "500", "600", "700")), g.pick(("2000", "2500", "3000", "4000"))
    elif arch == "ct_scout":
        count = g.pick((1, 1, 2))
        ds.ConvolutionKernel = g.pick(("T20s", "STANDARD", "FC10", "UB"))
        ds.WindowCenter, ds.WindowWidth = "40", "400"
        if g.p(0.5):
            ds.SliceThickness = g.pick(("0.6", "1", "2"))
    elif arch == "ct_mpr":
        ds.SliceThickness = g.pick(("2", "3", "4", "5"))
        count = g.i(30, 70)
        ds.ConvolutionKernel = g.pick(kernels_soft)
        ds.WindowCenter, ds.WindowWidth = "40", g.pick(("80", "100"))
    elif arch == "ct_cta":
        ds.SliceThickness = g.pick(("0.5", "0.625", "0.75", "1"))
        count = g.i(250, 600)
        ds.ConvolutionKernel = g.pick(("Hv36", "Bv36", "STANDARD", "FC43", "CB"))
        ds.WindowCenter, ds.WindowWidth = g.pick(("150", "200", "300")), g.pick(("600", "700", "800"))
        ds.ContrastBolusAgent = g.pick(("Omnipaque 350", "Ultravist 370", "IOMERON", "Visipaque"))
    elif arch == "ct_body":
        ds.SliceThickness = g.pick(("1", "2", "3", "5"))
        count = g.i(60, 400)
        ds.ConvolutionKernel = g.pick(kernels_soft + ("Br40", "LUNG", "YA"))
        ds.WindowCenter, ds.WindowWidth = g.pick(("40", "50", "-600")), g.pick(("400", "350", "1500"))
        if g.p(0.5):
            ds.ContrastBolusAgent = "Omnipaque 350"
    elif arch == "ct_dose":
        count = 1
    ds.Rows = ds.Columns = 512
    return ds, int(count)


def _protocol(family: Family, g: _Gen) -> list[tuple[str, bool]]:
    """Series archetypes of one study, in acquisition order, with a post-contrast flag."""
    have = family.names
    if family.modality == "CT":
        if g.p(0.1):
            return [("ct_scout", False), ("ct_body", False), ("ct_body", False)] + ([("ct_dose", False)] if g.p(0.5) else [])
        seq = [("ct_scout", False)] * g.i(1, 2) + [("ct_brain", False)] * g.i(1, 3) + [("ct_bone", False)] * g.i(0, 2)
        seq += [("ct_mpr", False)] * g.i(0, 2)
        if g.p(0.15):
            seq += [("ct_cta", False)]
        if g.p(0.5):
            seq += [("ct_dose", False)]
        return seq
    seq: list[tuple[str, bool]] = [("loc", False)]
    if g.p(0.4):
        seq.append(("cal", False))
    if g.p(0.08):  # spine study
        seq += [("spine_t2", False), ("spine_t1", False)] + ([("stir", False)] if g.p(0.5) else [])
        if g.p(0.4):
            seq.append(("spine_t1", True))
        return seq
    t1_options = [a for a in T1_ARCHETYPES if a in have and a != "t1_3d_se"]
    if g.p(0.85):
        seq.append((g.pick(t1_options), False))
    if g.p(0.9):
        seq.append((g.pick(("t2_tse", "t2_tse", "t2_3d")), False))
    if g.p(0.9):
        seq.append((g.pick(("flair_2d", "flair_2d", "flair_3d")), False))
    if g.p(0.9):
        seq.append(("dwi", False))
        if g.p(0.95):
            seq.append(("adc", False))
    if g.p(0.5):
        seq.append(("swi", False))
        if g.p(0.5):
            seq.append((g.pick(("swi_mip", "swi_phase")), False))
    for arch, prob in (("t2star", 0.2), ("tof", 0.15), ("asl", 0.1), ("svs", 0.1), ("dti", 0.15), ("stir", 0.05), ("fmri", 0.08)):
        if g.p(prob):
            seq.append((arch, False))
            if arch == "tof" and g.p(0.7):
                seq.append(("tof_mip", False))
            if arch == "dti" and g.p(0.7):
                seq.append(("fa", False))
    if g.p(0.75):  # contrast injection
        if g.p(0.2):
            seq.append(("perf", True))
        post_t1 = [a for a in T1_ARCHETYPES if a in have]
        for _ in range(g.pick((1, 1, 2, 2, 3))):
            seq.append((g.pick(post_t1), True))
        if g.p(0.25):
            seq.append((g.pick(("flair_2d", "flair_3d", "t2_tse")), True))
        if g.p(0.1):
            seq.append(("swi", True))
        if g.p(0.3):
            seq.append(("mpr", True))
        if g.p(0.15):
            seq.append(("sub", True))
    return seq


def _describe(family: Family, arch: str, post: bool, plain_post: bool, pre_word: bool, g: _Gen) -> str:
    template = g.pick(family.names.get(arch) or GENERIC_NAMES[arch])
    plane = family.planes[g.pick(("ax", "ax", "ax", "sag", "cor"))]
    label = ARCHETYPE_LABEL[arch]
    post_text = ""
    if post and "{post}" in template and not plain_post and (label == "t1" or arch in ("mpr",) or g.p(0.6)):
        post_text = g.pick(family.post_tokens)
    elif not post and pre_word and label == "t1" and "{post}" in template:
        post_text = g.pick(family.pre_tokens)
    text = template.replace("{pl}", plane).replace("{post}", post_text)
    if g.p(0.1):
        text = text.upper()
    return text


def generate_study(family: Family, g: _Gen) -> list[CorpusItem]:
    """One synthetic study of ``family``: a list of labelled series."""
    study_uid = g.uid()
    field_t = 3.0 if g.p(family.field_3t_rate) else 1.5
    field_str = g.pick(("3", "3.0", "2.89362")) if field_t == 3.0 else g.pick(("1.5", "1.494"))
    if family.vendor == "GE" and g.p(0.1):
        field_str = "30000" if field_t == 3.0 else "15000"
    study = {"field": field_t, "field_str": field_str}
    manufacturer = g.pick(_MANUFACTURER_SPELLING[family.vendor])
    model = g.pick(_MODELS[family.vendor])
    station = f"{family.vendor[:3]}{g.i(1, 99):02d}"
    study_protocol = g.pick(("BRAIN TUMOR", "ROUTINE BRAIN", "BRAIN W WO", "Kopf", "Hirn Tumor", "NEURO", "HEAD"))
    tag_contrast = g.p(family.contrast_tag_rate)
    pre_word = g.p(0.3)
    items: list[CorpusItem] = []
    number = 1
    for arch, post in _protocol(family, g):
        label = ARCHETYPE_LABEL[arch]
        if label == "t1" and post:
            label = "t1c"
        plain_post = post and g.p(0.15)
        if family.modality == "CT":
            ds, count = _ct_dataset(family, arch, study, g)
            description = g.pick(family.names.get(arch) or GENERIC_NAMES[arch])
            if g.p(0.05):
                description = ""
        else:
            agent = post and (tag_contrast or (plain_post and label == "t1c"))
            ds, count = _mr_dataset(family, arch, post, agent, study, g)
            description = _describe(family, arch, post, plain_post, pre_word, g)
            if g.p(0.04) and not (label == "t1c" and not agent):  # empty descriptions happen; physics must carry them
                description = ""
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = g.uid()
        ds.SOPInstanceUID = g.uid()
        ds.SeriesNumber = number * (100 if family.vendor == "GE" and family.modality == "MR" else 1) + (0 if not post or g.p(0.8) else 1000)
        ds.InstanceNumber = 1
        ds.Manufacturer = manufacturer
        ds.ManufacturerModelName = model
        ds.StationName = station
        ds.PatientPosition = "HFS"
        if description:
            ds.SeriesDescription = description
        if family.protocol_style == "study":
            ds.ProtocolName = study_protocol
        elif family.protocol_style == "desc_suffix" and description:
            ds.ProtocolName = g.pick(("WIP ", "", "")) + description + g.pick((" SENSE", " CLEAR", ""))
        elif description and g.p(0.8):
            ds.ProtocolName = description.split("_ADC")[0].split("_TRACEW")[0]
        if family.modality == "MR" and arch not in ("loc", "cal", "svs") and g.p(family.multiframe_rate):
            kind = "enhanced" if g.p(0.5) else "legacy"
            contrast = ACQUISITION_CONTRAST.get(arch) if kind == "enhanced" else None
            ds = multiframe_header(ds, count, kind=kind, contrast=contrast)
        items.append(CorpusItem(SeriesSummary.from_header(ds, instance_count=count), label, family.name, arch))
        number += 1
    return items


def generate_corpus(seed: int = 0, studies_per_family: int = 40, families: Sequence[str] | None = None) -> list[CorpusItem]:
    """The labelled corpus: ``studies_per_family`` studies of every family.

    Deterministic in ``seed``; families are generated from independent child
    seeds so that asking for a subset gives the same series as the full corpus.
    """
    names = list(FAMILIES) if families is None else list(families)
    unknown = [n for n in names if n not in FAMILIES]
    if unknown:
        raise ValueError(f"unknown corpus families: {unknown}")
    items: list[CorpusItem] = []
    for index, name in enumerate(FAMILIES):
        if name not in names:
            continue
        family = FAMILIES[name]
        g = _Gen(np.random.default_rng([seed, index]))
        for _ in range(studies_per_family):
            items.extend(generate_study(family, g))
    log.debug("corpus_generated", seed=seed, items=len(items))
    return items
