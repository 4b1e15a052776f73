"""Turn a series header into a fixed-length numeric feature vector.

Why this shape: the 2020 platform's dcmclass showed that a gradient-boosted tree model
on the first header of a series is enough to tell MR contrasts apart. This
module keeps that idea and widens it so that sites whose naming the model has
never seen still classify well:

* SeriesNumber is deliberately *not* a feature (the 2020 platform used it): numbering
  is a per-site habit (GE counts in hundreds) and let the model learn a site
  rather than a sequence;
* physics (TR, TE, TI, flip angle, b-value, ...) carries the series when the
  description is empty or unfamiliar; impossible values (negative TE, TR of
  0, text in a numeric tag) become NaN, which xgboost treats as missing, and
  a missing indicator is added;
* categorical tags (ScanningSequence, ImageType, ...) are one-hot encoded over
  a known vocabulary plus a hashed "anything else" bucket block;
* SeriesDescription and ProtocolName are hashed as word tokens and
  character 3-grams, so ``T1+C``, ``t1_post`` and ``T1 KM`` share pieces.

Hashing uses ``zlib.crc32`` (stable across processes and platforms), never
Python's randomised ``hash()``. ``FEATURE_VERSION`` must be bumped whenever
the layout changes; saved models record it and refuse a mismatch.
"""

from __future__ import annotations

import math
import re
import zlib
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import numpy as np
import structlog
from pydicom.dataset import Dataset

from radnode.routing.enhanced import flatten_header
from radnode.routing.series_index import SeriesSummary

log = structlog.get_logger(__name__)

FEATURE_VERSION = 2

#: Buckets for the hashed text of SeriesDescription / ProtocolName and for
#: categorical values outside the vocabularies below.
DESCRIPTION_BUCKETS = 256
PROTOCOL_BUCKETS = 128
CATEGORICAL_BUCKETS = 64

# --- numeric features: name -> (lower bound, upper bound) of sensible values.
# Values outside the bounds are nonsense (a TE of -5 ms, a TR of 0) and become NaN.
_NUMERIC_BOUNDS: dict[str, tuple[float, float]] = {
    "RepetitionTime": (0.1, 100_000.0),
    "EchoTime": (0.01, 5_000.0),
    "InversionTime": (1.0, 20_000.0),
    "FlipAngle": (0.1, 360.0),
    "MagneticFieldStrength": (0.05, 12.0),
    "SliceThickness": (0.01, 100.0),
    "SpacingBetweenSlices": (0.01, 100.0),
    "Rows": (1.0, 10_000.0),
    "Columns": (1.0, 10_000.0),
    "PixelSpacing": (0.01, 50.0),
    "EchoTrainLength": (1.0, 1_000.0),
    "NumberOfTemporalPositions": (1.0, 10_000.0),
    "ImagesInAcquisition": (1.0, 100_000.0),
    "PixelBandwidth": (1.0, 10_000.0),
    "KVP": (20.0, 200.0),
    "WindowCenter": (-2_000.0, 5_000.0),
    "WindowWidth": (1.0, 10_000.0),
    "InstanceCount": (1.0, 1e6),
    "BValue": (0.0, 30_000.0),
}
NUMERIC_FEATURES: tuple[str, ...] = tuple(_NUMERIC_BOUNDS)

#: Derived numbers that trees find hard to build from the raw ones.
DERIVED_FEATURES: tuple[str, ...] = (
    "TE_over_TR", "TI_over_TR", "ContrastAgent", "IsDerived", "IsLocalizerType", "DescriptionEmpty", "DescriptionLength",
    "DescPostContrast", "DescPreContrast",
    # Structure a scanner cannot rename (v2): one flag per meaning, whatever
    # the vendor's spelling of it in ImageType / the enhanced descriptors.
    "HasInversion", "IsProjection", "IsSWIType", "IsPhase", "IsDiffusionMap", "IsTrace", "IsReformat",
)

#: ImageType / FrameType values that mean the same thing across vendors (v2).
_IMAGE_TYPE_FLAGS: dict[str, frozenset[str]] = {
    "IsProjection": frozenset({"MIP", "MNIP", "MIN IP", "MINIP", "MIN_IP", "PROJECTION IMAGE", "PROJECTION", "MAX_IP", "MINIMUM", "MAXIMUM"}),
    "IsSWIType": frozenset({"SWI", "SWAN", "SWIP", "SWI_IMAGES", "SW"}),
    "IsPhase": frozenset({"P", "PHASE", "P_FFE", "P_SE", "PHASE MAP", "PHASE_CONTRAST"}),
    "IsDiffusionMap": frozenset({"ADC", "EADC", "FA", "EXP", "TRACE_ADC", "CALC_ADC"}),
    "IsTrace": frozenset({"TRACEW", "TRACE", "DIFFUSION", "ISODWI", "CALC_BVALUE"}),
    "IsReformat": frozenset({"MPR", "REFORMATTED", "CPR", "CURVED", "MPR THICK", "VOLUME RENDERING"}),
}

#: How sites write "after contrast" / "before contrast" in a description, in
#: English, German, French and Italian. Hashed tokens only help for spellings
#: seen in training; these flags carry the radiologist's knowledge of the
#: common spellings to sites the model has never seen.
_POST_RE = re.compile(
    r"\+ ?c\b|\bc ?\+|\bpost|\bgad|\bgd\b|\bgado|\bkm\b|\bce\b|\bcontrast|\bkontrast|\bmdc\b|\bw\b(?! ?o)|\+ ?gd|\benhanc|\bapres\b|\bc\+"
)
#: "Without contrast" phrases whose contrast word must not count as "post".
_NEGATED_RE = re.compile(r"\b(?:sans|vor|ohne|avant|without|non|w ?/ ?o|wo|pre)\s*[-+]?\s*(?:km|kontrast|gado|gad|gd|contrast|c)\b")
_PRE_RE = re.compile(r"\bpre\b|\bnativ|\bwo\b|\bw ?/ ?o\b|-c\b|\bsans\b|\bvor\b|\bnon ?contrast|\bplain\b|\bohne\b|\bavant\b")

# --- categorical vocabularies: tag -> known values (upper case). Multi-valued
# tags (ImageType, ScanningSequence, ...) set one slot per value.
_VOCAB: dict[str, tuple[str, ...]] = {
    "Modality": ("MR", "CT", "PT", "OT", "SR", "SC", "US", "XA", "CR", "DX", "NM"),
    "Manufacturer": ("SIEMENS", "GE", "PHILIPS", "CANON", "TOSHIBA", "HITACHI", "FUJIFILM", "UNITED IMAGING"),
    "ScanningSequence": ("SE", "IR", "GR", "EP", "RM"),
    "SequenceVariant": ("SK", "MTC", "SS", "TRSS", "SP", "MP", "OSP", "NONE", "TOF"),
    "ScanOptions": ("PER", "RG", "CG", "PPG", "FC", "PFF", "PFP", "SP", "FS", "IR", "SAT", "SAT1", "SAT2", "SAT3", "FSA", "FSS", "FSI", "EDR", "TOF", "NPW", "FILTERED_GEMS", "ACC_GEMS", "EPI_GEMS", "FAST_GEMS", "SEQ_GEMS", "VB_GEMS", "CSM"),
    "MRAcquisitionType": ("2D", "3D"),
    "ImageType": (
        "ORIGINAL", "DERIVED", "PRIMARY", "SECONDARY", "M", "P", "R", "I", "MAG", "PHASE", "ND", "NORM", "DIS2D", "DIS3D",
        "MPR", "MIP", "MNIP", "MIN IP", "PROJECTION IMAGE", "SUBTRACT", "SUB", "ADC", "EADC", "DIFFUSION", "TRACEW", "TRACE",
        "FA", "SWI", "LOCALIZER", "AXIAL", "REFORMATTED", "VOLUME", "OTHER", "SCREEN SAVE", "CSA REPORT", "MOSAIC",
        "PERFUSION", "T2_STAR", "FILTERED", "MOCO", "CPR", "3D", "DOSE INFO", "NONE", "PROJECTION", "MINIP",
        # Enhanced MR Image Flavor (value 3) and Derived Pixel Contrast (value 4), PS3.3 C.8.16.1.3-4
        "T1", "T2", "PROTON_DENSITY", "FLUID_ATTENUATED", "STIR", "FMRI", "ANGIO", "MIN_IP", "MAX_IP", "MINIMUM", "MAXIMUM",
    ),
    "BodyPartExamined": ("HEAD", "BRAIN", "SKULL", "NECK", "SPINE", "CSPINE", "TSPINE", "LSPINE", "CHEST", "ABDOMEN", "PELVIS", "EXTREMITY", "KNEE", "HEADNECK", "ORBIT"),
    "PatientPosition": ("HFS", "FFS", "HFP", "FFP"),
    "ConvolutionKernel": (),  # all hashed; keywords below capture the meaning
    "ContrastBolusAgent": (),
    "AngioFlag": ("Y", "N"),
    # Enhanced MR descriptors (PS3.3 C.8.13.1), read from the top level or the MR Image Frame Type macro.
    "AcquisitionContrast": ("T1", "T2", "T2_STAR", "PROTON_DENSITY", "FLUID_ATTENUATED", "STIR", "DIFFUSION", "PERFUSION", "TOF", "FLOW_ENCODED", "MIXED", "UNKNOWN"),
    "ComplexImageComponent": ("MAGNITUDE", "PHASE", "REAL", "IMAGINARY", "MIXED"),
    "PhotometricInterpretation": ("MONOCHROME1", "MONOCHROME2", "RGB", "PALETTE COLOR"),
}
CATEGORICAL_TAGS: tuple[str, ...] = tuple(_VOCAB)

#: Keywords looked for in ConvolutionKernel (CT): they generalise across vendors
#: better than the raw kernel names do.
_KERNEL_KEYWORDS: tuple[tuple[str, str], ...] = (
    ("kernel_bone", r"bone|detail|sharp|lung|edge|^[hj]r?[5-9][0-9]|^fc[3-9][0-9]|^y[b-f]$|^[del]$"),
    ("kernel_soft", r"soft|std|stnd|standard|brain|head|^[hj]r?[1-4][0-9]|^fc[0-2][0-9]|^u[a-c]$|^[abc]$|^q[r-s]"),
)


def _hash_bucket(namespace: str, token: str, buckets: int) -> int:
    """Stable bucket for ``token`` (crc32; identical in every process and on every platform)."""
    return zlib.crc32(f"{namespace}\x1f{token}".encode("utf-8", "replace")) % buckets


def _raw_values(value: Any) -> list[Any]:
    """Flatten a pydicom value (single, MultiValue, list) into a list."""
    if value is None:
        return []
    if isinstance(value, (str, bytes)):
        return [value]
    try:
        return list(value)
    except TypeError:
        return [value]


def _first_float(value: Any) -> float:
    """First value of a numeric tag as float, NaN for missing or unparsable values."""
    for item in _raw_values(value):
        if isinstance(item, bytes):
            try:
                item = item.decode("ascii", "replace")
            except Exception:
                return math.nan
        try:
            number = float(str(item).strip().split("\\")[0])
        except (TypeError, ValueError):
            return math.nan
        return number if math.isfinite(number) else math.nan
    return math.nan


def _safe_get(ds: Dataset, keyword: str) -> Any:
    """``ds.get`` that swallows the errors pydicom raises on corrupt elements."""
    try:
        return ds.get(keyword)
    except Exception:
        return None


def _safe_get_tag(ds: Dataset, group: int, element: int) -> Any:
    try:
        elem = ds.get((group, element))
        return None if elem is None else elem.value
    except Exception:
        return None


def _string_values(value: Any) -> list[str]:
    """Values of a (possibly multi-valued) string tag, upper case, stripped."""
    out: list[str] = []
    for item in _raw_values(value):
        if isinstance(item, bytes):
            item = item.decode("latin-1", "replace")
        for part in str(item).split("\\"):
            part = part.strip().upper()
            if part:
                out.append(part)
    return out


def _b_value(ds: Dataset) -> float:
    """Diffusion b-value from the standard tag or the common vendor private tags.

    Standard (0018,9087) first; then Siemens (0019,100C), GE (0043,1039) whose
    first value is ``1e9 + b`` on many software versions, Philips (2001,1003).
    """
    b = _first_float(_safe_get_tag(ds, 0x0018, 0x9087))
    if not math.isnan(b):
        return b
    for group, element in ((0x0019, 0x100C), (0x0043, 0x1039), (0x2001, 0x1003)):
        b = _first_float(_safe_get_tag(ds, group, element))
        if not math.isnan(b):
            if b >= 1e9:
                b -= 1e9
            return b
    return math.nan


def _numeric(ds: Dataset, summary: SeriesSummary) -> dict[str, float]:
    values: dict[str, float] = {}
    for name in NUMERIC_FEATURES:
        if name == "InstanceCount":
            value = float(summary.instance_count)
        elif name == "BValue":
            value = _b_value(ds)
        else:
            value = _first_float(_safe_get(ds, name))
        low, high = _NUMERIC_BOUNDS[name]
        if math.isnan(value) or value < low or value > high:
            value = math.nan
        values[name] = value
    # Field strength is stored in gauss by a few old scanners.
    fs = _first_float(_safe_get(ds, "MagneticFieldStrength"))
    if not math.isnan(fs) and 1000.0 <= fs <= 120_000.0:
        values["MagneticFieldStrength"] = fs / 10_000.0
    return values


_TOKEN_RE = re.compile(r"[a-z]+|[0-9]+(?:\.[0-9]+)?|\+|\*")
_CAMEL_RE = re.compile(r"(?<=[a-z])(?=[A-Z])")


def text_tokens(text: str) -> list[str]:
    """Word tokens and character 3-grams of a description, lower case.

    Letters and digits are split (``t1w`` -> ``t``, ``1``, ``w``, plus the
    whole ``t1w``), ``+`` and ``*`` are kept as tokens because ``+C`` and
    ``T2*`` carry meaning, and 3-grams of the squashed text catch spellings
    the word split misses.
    """
    if not text:
        return []
    text = _CAMEL_RE.sub(" ", text)
    low = text.lower()
    squashed = re.sub(r"[\s_\-/\\.,;:()\[\]]+", " ", low).strip()
    tokens: list[str] = []
    for word in squashed.split(" "):
        if not word:
            continue
        tokens.append("w:" + word)
        parts = _TOKEN_RE.findall(word)
        if len(parts) > 1:
            tokens.extend("p:" + p for p in parts)
    padded = f" {squashed} "
    tokens.extend("g:" + padded[i : i + 3] for i in range(len(padded) - 2))
    return tokens


@lru_cache(maxsize=1)
def _layout() -> tuple[tuple[str, ...], dict[str, int]]:
    """Feature names in order and the index of each named (non-hashed) feature."""
    names: list[str] = []
    names.extend(f"num:{n}" for n in NUMERIC_FEATURES)
    names.extend(f"missing:{n}" for n in NUMERIC_FEATURES)
    names.extend(f"derived:{n}" for n in DERIVED_FEATURES)
    for tag, vocab in _VOCAB.items():
        names.extend(f"cat:{tag}={v}" for v in vocab)
        names.append(f"missing:{tag}")
    names.extend(f"kw:{k}" for k, _ in _KERNEL_KEYWORDS)
    names.extend(f"cathash:{i}" for i in range(CATEGORICAL_BUCKETS))
    names.extend(f"desc:{i}" for i in range(DESCRIPTION_BUCKETS))
    names.extend(f"proto:{i}" for i in range(PROTOCOL_BUCKETS))
    index = {n: i for i, n in enumerate(names)}
    return tuple(names), index


def feature_names() -> tuple[str, ...]:
    """Names of the feature columns, in order (for explanations and debugging)."""
    return _layout()[0]


def n_features() -> int:
    return len(_layout()[0])


def extract_features(summary: SeriesSummary) -> np.ndarray:
    """Feature vector (float32, length :func:`n_features`) of one series. Never raises."""
    names, index = _layout()
    vec = np.zeros(len(names), dtype=np.float32)
    try:
        _fill(vec, index, summary)
    except Exception as exc:  # a corrupt header must not stop classification
        log.warning("feature_extraction_failed", series_uid=summary.series_instance_uid, error=repr(exc))
    return vec


def _fill(vec: np.ndarray, index: dict[str, int], summary: SeriesSummary) -> None:
    # Enhanced / legacy-converted objects keep TR, TE, TI, ... in functional groups.
    ds = flatten_header(summary.header) if summary.header is not None else Dataset()
    numeric = _numeric(ds, summary)
    for name, value in numeric.items():
        vec[index[f"num:{name}"]] = value
        vec[index[f"missing:{name}"]] = 1.0 if math.isnan(value) else 0.0

    tr, te, ti = numeric["RepetitionTime"], numeric["EchoTime"], numeric["InversionTime"]
    vec[index["derived:TE_over_TR"]] = te / tr if not (math.isnan(te) or math.isnan(tr)) else math.nan
    vec[index["derived:TI_over_TR"]] = ti / tr if not (math.isnan(ti) or math.isnan(tr)) else math.nan
    agent = " ".join(_string_values(_safe_get(ds, "ContrastBolusAgent")))
    no_agent = agent in ("", "NONE", "NO", "N", "NA", "N/A", "-", "0")
    vec[index["derived:ContrastAgent"]] = 0.0 if no_agent else 1.0
    image_type = _string_values(_safe_get(ds, "ImageType"))
    vec[index["derived:IsDerived"]] = 1.0 if image_type and image_type[0] == "DERIVED" else 0.0
    vec[index["derived:IsLocalizerType"]] = 1.0 if "LOCALIZER" in image_type else 0.0
    scanning = _string_values(_safe_get(ds, "ScanningSequence"))
    vec[index["derived:HasInversion"]] = 1.0 if (not math.isnan(ti) or "IR" in scanning or str(_safe_get(ds, "InversionRecovery") or "").upper() == "YES") else 0.0
    tokens = set(image_type)
    for part in list(tokens):
        tokens.update(t for t in re.split(r"[_ ]", part) if t)
    for flag, spellings in _IMAGE_TYPE_FLAGS.items():
        vec[index[f"derived:{flag}"]] = 1.0 if tokens & spellings else 0.0
    component = " ".join(_string_values(_safe_get(ds, "ComplexImageComponent")))
    if component == "PHASE":
        vec[index["derived:IsPhase"]] = 1.0
    description = summary.series_description or ""
    vec[index["derived:DescriptionEmpty"]] = 1.0 if not description.strip() else 0.0
    vec[index["derived:DescriptionLength"]] = float(len(description.strip()))
    spaced = _CAMEL_RE.sub(" ", description).lower().replace("_", " ")
    vec[index["derived:DescPostContrast"]] = 1.0 if _POST_RE.search(_NEGATED_RE.sub(" ", spaced)) else 0.0
    vec[index["derived:DescPreContrast"]] = 1.0 if _PRE_RE.search(spaced) else 0.0

    base_cat = index["cathash:0"]
    for tag, vocab in _VOCAB.items():
        values = image_type if tag == "ImageType" else _string_values(_safe_get(ds, tag))
        if tag == "Manufacturer":
            values = [_normalise_manufacturer(v) for v in values[:1]]
        if not values:
            vec[index[f"missing:{tag}"]] = 1.0
            continue
        for value in values:
            key = f"cat:{tag}={value}"
            if key in index:
                vec[index[key]] = 1.0
            else:
                vec[base_cat + _hash_bucket(tag, value, CATEGORICAL_BUCKETS)] += 1.0

    kernel = " ".join(_string_values(_safe_get(ds, "ConvolutionKernel"))).lower()
    if kernel:
        for name, pattern in _KERNEL_KEYWORDS:
            if any(re.search(pattern, part) for part in kernel.split()):
                vec[index[f"kw:{name}"]] = 1.0

    base_desc = index["desc:0"]
    for token in text_tokens(description):
        vec[base_desc + _hash_bucket("desc", token, DESCRIPTION_BUCKETS)] += 1.0
    protocol = " ".join(_string_values(_safe_get(ds, "ProtocolName")))
    base_proto = index["proto:0"]
    for token in text_tokens(protocol):
        vec[base_proto + _hash_bucket("proto", token, PROTOCOL_BUCKETS)] += 1.0


def _normalise_manufacturer(value: str) -> str:
    """Map the many spellings of a vendor name to one vocabulary entry."""
    v = value.upper()
    for known, needles in (
        ("SIEMENS", ("SIEMENS",)),
        ("GE", ("GE ", "GE", "GENERAL ELECTRIC")),
        ("PHILIPS", ("PHILIPS",)),
        ("CANON", ("CANON",)),
        ("TOSHIBA", ("TOSHIBA",)),
        ("HITACHI", ("HITACHI",)),
        ("FUJIFILM", ("FUJI",)),
        ("UNITED IMAGING", ("UIH", "UNITED")),
    ):
        if any(v.startswith(n) for n in needles):
            return known
    return v


def feature_matrix(summaries: Sequence[SeriesSummary]) -> np.ndarray:
    """Stack the feature vectors of many series into an ``(n, n_features)`` float32 matrix."""
    if not summaries:
        return np.zeros((0, n_features()), dtype=np.float32)
    return np.vstack([extract_features(s) for s in summaries])


def text_columns() -> np.ndarray:
    """Columns computed from the free text of SeriesDescription / ProtocolName (hashed tokens, length, empty flag).

    The post/pre-contrast flags are not among them: they encode the common
    spellings a radiologist knows, and are kept by :func:`augment_text`.
    """
    names, index = _layout()
    cols = [i for i, n in enumerate(names) if n.startswith(("desc:", "proto:"))]
    cols += [index["derived:DescriptionEmpty"], index["derived:DescriptionLength"]]
    return np.asarray(sorted(cols), dtype=np.int64)


def augment_text(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One extra copy of every row whose description is dropped or replaced by unseen tokens.

    Why: a model trained only on the corpus' own names learns that a name it
    knows decides the class, and then lets a name it has never seen (a new
    vendor, a site's own habit) outvote clear physics. Half the copies get an
    empty description (as some exports do), half get 2–12 random hashed
    tokens in both text blocks — text that carries no class information —
    so the trees must find the class in the physics and structure columns
    whenever the text is unfamiliar.
    """
    names, index = _layout()
    out = x.copy()
    desc_cols = np.asarray([i for i, n in enumerate(names) if n.startswith("desc:")])
    proto_cols = np.asarray([i for i, n in enumerate(names) if n.startswith("proto:")])
    drop = rng.random(len(out)) < 0.5
    out[:, desc_cols] = 0.0
    out[:, proto_cols] = 0.0
    out[drop, index["derived:DescriptionEmpty"]] = 1.0
    out[drop, index["derived:DescriptionLength"]] = 0.0
    for row in np.flatnonzero(~drop):
        k = int(rng.integers(2, 13))
        out[row, rng.choice(desc_cols, size=k)] += 1.0
        if rng.random() < 0.7:
            out[row, rng.choice(proto_cols, size=k)] += 1.0
        out[row, index["derived:DescriptionEmpty"]] = 0.0
        out[row, index["derived:DescriptionLength"]] = float(rng.integers(3, 40))
    return out
