"""Model folders: the manifest (validated, sha256-pinned), model references and
discovery (site folders first, then the shipped ones; a broken folder is listed
with its error, never stops discovery)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np
import structlog
import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from radnode.analyzers.base import AnalyzerError
from radnode.model.validation import error_message, format_loc

log = structlog.get_logger(__name__)


MANIFEST_FILE = "manifest.yaml"


MODEL_FILE = "model.onnx"


#: Models shipped with radnode (one subfolder each).
BUILTIN_MODEL_DIR = Path(__file__).resolve().parents[2] / "models"


class ModelError(AnalyzerError):
    """A model cannot be found, verified, loaded or fed: an admin must act.

    Subclasses ``AnalyzerError`` because retrying the same job cannot help
    until someone fixes the model folder or the settings.
    """


_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


_VERSION_RE = re.compile(r"^(\d+)(?:\.(\d+))?(?:\.(\d+))?(?:-([0-9A-Za-z.-]+))?(?:\+([0-9A-Za-z.-]+))?$")


_SHA_RE = re.compile(r"^[0-9a-f]{64}$")


class LabelSpec(BaseModel):
    """One output channel: the label value it becomes and what it means."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    value: int = Field(ge=0, le=255, description="Label value written to the label map (uint8).")
    name: str = Field(min_length=1)
    #: SNOMED CT (code value, code meaning) of the segmented property / finding.
    snomed: tuple[str, str] | None = None


#: A per-slice classifier with a per-slice segmentation head on a slice stack (head CT).
SLICE_TASK = "slice-classification-segmentation"

#: Output names the slice task's network must have (the model contract).
SLICE_SEG_OUTPUT = "seg_logits"
SLICE_CLASS_OUTPUT = "slice_logits"


class CTSpec(BaseModel):
    """The ``ct:`` block of a slice model: the grid, the neighbours and the windows it was trained on.

    Typed and closed like the rest of the manifest because every value here
    changes what the network sees: a wrong window or grid gives plausible-looking
    nonsense, not an error.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: Model-grid pixel size (mm); the preprocessing's ``in_plane_mm``.
    in_plane_mm: float = Field(gt=0.0, le=10.0)
    #: Model-grid rows = columns; the preprocessing's ``in_plane_size``.
    in_plane_size: int = Field(ge=16, le=2048)
    #: Neighbouring slices on each side fed with each slice (edge slices repeat their neighbour).
    context_slices: int = Field(default=0, ge=0, le=8)
    #: Display windows (centre, width) in HU, each mapped to [0, 1], in channel order.
    windows: list[tuple[float, float]]
    #: Names of the per-slice outputs (sigmoid), in the order of the network's slice output.
    slice_outputs: list[str]
    #: Study-level threshold per slice output: present when the highest slice probability reaches it.
    thresholds: dict[str, float]
    #: Where a slice's probabilities come from. ``model``: the sigmoid of ``slice_logits``.
    #: ``masked-segmentation``: the model's ``slice_logits`` are a fixed function of the pixel
    #: count of each label in the slice's arg-max map (``2·(ln(count + 0.5) − ln 4)``; "any" counts
    #: every bleed label), and the analyzer recomputes them from that map restricted to the
    #: intracranial mask — for a model whose false pixels lie outside the skull (MODEL_CARD.md).
    slice_probability: Literal["model", "masked-segmentation"] = "model"
    #: Within one connected bleed region (26-connected, all labels together), a label holding
    #: less than this share of the region's voxels takes the region's majority label; 0 = off.
    #: For a model that confuses subtypes at the border between two bleeds (MODEL_CARD.md); it
    #: also merges a genuinely small second subtype touching a larger bleed, so it is a choice
    #: measured on validation studies, never a default.
    merge_minor_labels: float = Field(default=0.0, ge=0.0, lt=0.5)
    #: How a ``masked-segmentation`` model's "any" slice probability is read. ``label-area``: the
    #: arg-max pixel count, as for the subtypes. ``soft-area``: the expected bleed area inside the
    #: mask, the sum of 1 − P(background) of ``seg_logits``' softmax, in the same formula — it
    #: ranks the slices the model half-sees above clean ones instead of level with them. It suits a
    #: confident model: one that leaks a little bleed probability on every pixel sums it over the
    #: whole brain, so the choice is measured per model on validation studies (MODEL_CARD.md).
    any_probability: Literal["label-area", "soft-area"] = "label-area"
    #: "any" slice probability at least this share of its higher neighbour's (partial volume of a
    #: bleed's edge in the next slab); below the "any" threshold, so a neighbour alone never makes
    #: a slice positive evidence; 0 = off.
    neighbour_share: float = Field(default=0.0, ge=0.0, lt=1.0)
    #: A subtype is reported present only when its segmented volume inside the intracranial mask
    #: reaches this many mL (a few voxels of a second subtype at a bleed's border are the demo
    #: model's commonest false call); "any" never depends on it; 0 = off.
    min_subtype_volume_ml: float = Field(default=0.0, ge=0.0, le=100.0)

    @field_validator("windows")
    @classmethod
    def _windows(cls, value: list[tuple[float, float]]) -> list[tuple[float, float]]:
        if not value:
            raise ValueError("must list at least one (centre, width) window")
        for i, (centre, width) in enumerate(value):
            if not (math.isfinite(centre) and math.isfinite(width) and width > 0):
                raise ValueError(f"window {i} must be (centre, width) in HU with a positive width (got {[centre, width]})")
        return value

    @field_validator("slice_outputs")
    @classmethod
    def _outputs(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("must name at least one per-slice output")
        if any(not isinstance(v, str) or not v.strip() for v in value):
            raise ValueError("per-slice output names must be non-empty")
        duplicates = sorted({v for v in value if value.count(v) > 1})
        if duplicates:
            raise ValueError(f"per-slice output names must be unique (repeated: {', '.join(duplicates)})")
        return value

    @model_validator(mode="after")
    def _thresholds(self) -> "CTSpec":
        missing = [name for name in self.slice_outputs if name not in self.thresholds]
        unknown = sorted(set(self.thresholds) - set(self.slice_outputs))
        if missing or unknown:
            parts = ([f"missing for {', '.join(missing)}"] if missing else []) + \
                ([f"unknown outputs {', '.join(unknown)}"] if unknown else [])
            raise ValueError(f"thresholds: one per slice output ({'; '.join(parts)})")
        bad = {k: v for k, v in self.thresholds.items() if not (math.isfinite(v) and 0.0 < v < 1.0)}
        if bad:
            raise ValueError(f"thresholds: each must be a probability strictly between 0 and 1 (got {bad})")
        if (self.any_probability != "label-area" or self.neighbour_share) and self.slice_probability != "masked-segmentation":
            raise ValueError("any_probability and neighbour_share read a masked-segmentation model: "
                             "set slice_probability: masked-segmentation")
        if self.neighbour_share and self.neighbour_share >= self.thresholds.get("any", 1.0):
            raise ValueError(f"neighbour_share ({self.neighbour_share}) must stay below the 'any' threshold "
                             f"({self.thresholds['any']}) so that a neighbour alone never makes a slice positive")
        return self

    @property
    def channels_per_slice(self) -> int:
        """Input channels the network takes for one slice: every window of every neighbour."""
        return len(self.windows) * (2 * self.context_slices + 1)


class SmallLesionSpec(BaseModel):
    """``lesions.small:``: a second detector for small lesions, on the T1c itself (see
    :mod:`radnode.analyzers.metastasis.blobs`). Closed and typed for the same reason as the block
    around it: the numbers are chosen on validation studies and trade missed lesions against false ones.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: A blob's peak must reach this scale-normalised blobness (−σ²·λ, λ the Hessian eigenvalue
    #: nearest zero, all three negative) of the z-scored T1c.
    min_blobness: float = Field(gt=0.0, le=100.0)
    #: ... and this smoothed intensity (z-score in the brain) at the peak.
    min_intensity: float = Field(ge=-10.0, le=50.0)
    #: Gaussian scales (mm) the Hessian is taken at; a ball of radius r answers best at σ ≈ r/√3.
    scales_mm: tuple[float, ...] = Field(default=(1.0, 1.5), min_length=1, max_length=4)
    #: A blob's extent (its half-maximum region) stops at this radius (mm): larger lesions are the model's.
    max_radius_mm: float = Field(default=3.5, gt=0.0, le=10.0)
    #: No blob within this distance (mm) of a model candidate (its rim, a fragment of it).
    exclusion_mm: float = Field(default=3.0, ge=0.0, le=20.0)
    #: A blob's half-maximum region must be round (ratio of its two largest principal axes at most
    #: this: a bend of a vessel passes the Hessian test but stretches along the vessel) ...
    max_elongation: float | None = Field(default=None, ge=1.0, le=10.0)
    #: ... and small (mm³): a broad bright region is not a small lesion the model missed.
    max_volume_mm3: float | None = Field(default=None, gt=0.0, le=1000.0)

    @field_validator("scales_mm")
    @classmethod
    def _positive(cls, v: tuple[float, ...]) -> tuple[float, ...]:
        if any(s <= 0 or s > 5 for s in v):
            raise ValueError(f"scales_mm must be in (0, 5] mm, got {list(v)}")
        return v


class LesionCandidateSpec(BaseModel):
    """The ``lesions:`` block of a lesion-detection model: how its probability map becomes lesions.

    Typed and closed because these numbers trade missed metastases against
    false ones: they are a calibration of one model, chosen on validation
    studies it was not trained on (the manifest's comment says which), and a
    misspelt key silently falling back to a default would change what a
    radiologist is shown. Read by :mod:`radnode.analyzers.metastasis.candidates`.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: A candidate needs at least one voxel with P(lesion) ≥ this (hysteresis seed).
    seed_threshold: float = Field(gt=0.0, lt=1.0)
    #: A candidate grows from its seeds into 26-connected voxels with P(lesion) ≥ this
    #: (its extent: volume, centroid); at most ``seed_threshold``.
    grow_threshold: float = Field(gt=0.0, lt=1.0)
    #: Candidates smaller than this (mm³, after growing) are dropped; 0 keeps every size.
    min_volume_mm3: float = Field(default=0.0, ge=0.0, le=1.0e6)
    #: Candidates whose highest probability (their confidence) is below this are dropped.
    min_confidence: float = Field(default=0.0, ge=0.0, lt=1.0)
    #: Tubular candidates (vessels) are dropped when the ratio of the two largest principal
    #: axes (standard deviations of the voxel positions, mm) exceeds this; ``None`` = no shape test.
    max_elongation: float | None = Field(default=None, ge=1.0, le=100.0)
    #: The shape test applies to candidates of at least this many mm³ (below, a shape is noise).
    elongation_min_volume_mm3: float = Field(default=20.0, ge=0.0, le=1.0e6)
    #: Plate-like candidates (dural enhancement along the inner table) are dropped when the ratio of
    #: the second to the smallest principal axis exceeds this (same volume floor); ``None`` = no test.
    max_flatness: float | None = Field(default=None, ge=1.0, le=100.0)
    #: A candidate must reach at least this depth (mm) inside the brain mask: enhancement confined
    #: to the mask's outer rim is dura, a vessel on the surface or the mask's own edge; ``None`` = no test.
    min_depth_mm: float | None = Field(default=None, ge=0.0, le=50.0)
    #: Small lesions the model misses, found as bright round blobs on the T1c; ``None`` = model only.
    small: SmallLesionSpec | None = None

    @model_validator(mode="after")
    def _order(self) -> "LesionCandidateSpec":
        if self.grow_threshold > self.seed_threshold:
            raise ValueError(f"grow_threshold ({self.grow_threshold}) must not exceed seed_threshold "
                             f"({self.seed_threshold}): a candidate grows from its seeds into lower probabilities")
        return self


class ModelManifest(BaseModel):
    """What ``manifest.yaml`` says about a model; unknown keys are rejected.

    Unknown keys are errors rather than ignored because a misspelt key
    (``spacing`` for ``spacing_mm``) would otherwise silently fall back to a
    default and produce wrong results on real patients.
    """

    model_config = ConfigDict(extra="forbid")

    name: str
    version: str
    task: Literal["segmentation", "classification", "slice-classification-segmentation"]
    application: str = Field(min_length=1)
    #: Input roles in channel order (e.g. flair, t1, t1c, t2).
    inputs: list[str]
    #: (x, y, z) voxel spacing the model expects, in mm.
    spacing_mm: tuple[float, float, float] | None = None
    #: (x, y, z) voxels per sliding window.
    patch_size: tuple[int, int, int] | None = None
    #: Axis orientation of the arrays the model was trained on, as the DICOM
    #: letters each image axis (x, y, z) points towards — e.g. ``LAS`` for
    #: MNI-like NIfTI stored arrays. ``None``: the pipeline's grid as is.
    orientation: str | None = None
    normalization: Literal["zscore-brain", "none", "ct-windows"] = "none"
    output: Literal["logits", "probabilities", "sigmoid-logits"] = "logits"
    labels: list[LabelSpec]
    #: Segmentation: a voxel is foreground (any label but background) when
    #: 1 − P(background) reaches this, then it takes its most probable
    #: foreground label. ``None``: plain arg-max over all labels (0.5 is close
    #: to it). A calibration of the model, measured on data it was not trained
    #: on; BENCHMARKS.md says how the shipped value was chosen.
    foreground_threshold: float | None = Field(default=None, gt=0.0, lt=1.0)
    #: Slice models (task ``slice-classification-segmentation``): grid, neighbours, windows, outputs.
    ct: CTSpec | None = None
    #: Lesion-detection segmentation models (e.g. metastasis): hysteresis thresholds, minimum
    #: size and confidence, shape test that turn the probability map into lesion candidates.
    lesions: LesionCandidateSpec | None = None
    intended_use: str = ""
    demo: bool = False
    license: str = ""
    #: Free-form provenance (data, epochs, metrics); never interpreted.
    training: dict[str, Any] = Field(default_factory=dict)
    sha256: str

    @field_validator("orientation")
    @classmethod
    def _orientation(cls, value: str | None) -> str | None:
        if value is None:
            return value
        axes = [next((pair for pair in ("LR", "AP", "SI") if ch in pair), None) for ch in value]
        if len(value) != 3 or None in axes or len(set(axes)) != 3:
            raise ValueError(f"{value!r} is not an orientation like LAS or LPS (one of L/R, A/P, S/I each)")
        return value

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME_RE.match(value):
            raise ValueError("must start with a letter or digit and contain only letters, digits, '.', '_' and '-'")
        return value

    @field_validator("version")
    @classmethod
    def _version(cls, value: str) -> str:
        if not _VERSION_RE.match(value):
            raise ValueError(f"{value!r} is not a version like 1.2.0 (semantic versioning)")
        return value

    @field_validator("inputs")
    @classmethod
    def _inputs(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("must name at least one input role")
        if any(not role.strip() for role in value):
            raise ValueError("input roles must be non-empty")
        duplicates = sorted({role for role in value if value.count(role) > 1})
        if duplicates:
            raise ValueError(f"input roles must be unique (repeated: {', '.join(duplicates)})")
        return value

    @field_validator("spacing_mm")
    @classmethod
    def _spacing(cls, value: tuple[float, float, float] | None) -> tuple[float, float, float] | None:
        if value is not None and not all(math.isfinite(v) and v > 0 for v in value):
            raise ValueError(f"every spacing must be a positive number of mm (got {list(value)})")
        return value

    @field_validator("patch_size")
    @classmethod
    def _patch(cls, value: tuple[int, int, int] | None) -> tuple[int, int, int] | None:
        if value is not None and not all(v >= 8 for v in value):
            raise ValueError(f"every patch dimension must be at least 8 voxels (got {list(value)})")
        return value

    @field_validator("sha256")
    @classmethod
    def _sha(cls, value: str) -> str:
        value = value.strip().lower()
        if not _SHA_RE.match(value):
            raise ValueError("must be the 64 hexadecimal characters printed by `sha256sum model.onnx`")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> ModelManifest:
        if not self.labels:
            raise ValueError("labels: must list at least one label")
        values = [label.value for label in self.labels]
        duplicates = sorted({v for v in values if values.count(v) > 1})
        if duplicates:
            raise ValueError(f"labels: label values must be unique (repeated: {', '.join(map(str, duplicates))})")
        if self.task == "segmentation":
            if 0 not in values:
                raise ValueError("labels: a segmentation model must have a label with value 0 (background)")
            if self.patch_size is None:
                raise ValueError("patch_size: required for segmentation models")
            if self.spacing_mm is None:
                raise ValueError("spacing_mm: required for segmentation models")
        if self.task == SLICE_TASK:
            if 0 not in values:
                raise ValueError(f"labels: a {SLICE_TASK} model must have a label with value 0 (background)")
            if self.ct is None:
                raise ValueError(f"ct: required for {SLICE_TASK} models (in_plane_mm, in_plane_size, windows, "
                                 "slice_outputs, thresholds)")
            if self.normalization != "ct-windows":
                raise ValueError(f"normalization: a {SLICE_TASK} model takes ct-windows (got {self.normalization!r})")
            if self.output != "logits":
                raise ValueError(f"output: a {SLICE_TASK} model gives logits (softmax per pixel, sigmoid per slice), "
                                 f"not {self.output!r}")
            if self.spacing_mm is not None or self.patch_size is not None:
                raise ValueError(f"spacing_mm/patch_size: not used by {SLICE_TASK} models; the grid is ct.in_plane_mm "
                                 "and ct.in_plane_size")
        elif self.ct is not None:
            raise ValueError(f"ct: only read for task {SLICE_TASK} (this model's task is {self.task})")
        if self.lesions is not None and self.task != "segmentation":
            raise ValueError(f"lesions: only read for segmentation models (this model's task is {self.task})")
        return self

    @property
    def input_channels(self) -> int:
        """Channels of the network input: one per input role, times the windows and neighbours of a slice model."""
        if self.ct is not None:
            return len(self.inputs) * self.ct.channels_per_slice
        return len(self.inputs)

    @property
    def patch_zyx(self) -> tuple[int, int, int]:
        """The patch in array order (numpy/SimpleITK arrays are (z, y, x))."""
        if self.patch_size is None:
            raise ModelError(f"model {self.name} {self.version}: manifest has no patch_size")
        x, y, z = self.patch_size
        return (z, y, x)

    @property
    def label_values(self) -> np.ndarray:
        return np.array([label.value for label in self.labels], dtype=np.uint8)


def _format_validation_error(exc: ValidationError) -> str:
    """One line per problem, each naming the field, in words an admin can act on."""
    problems: list[str] = []
    for err in exc.errors():
        loc = tuple(err.get("loc", ()))
        where = format_loc(loc)
        msg = error_message(err)
        if err.get("type") == "extra_forbidden":
            owners = {"labels": LabelSpec, "ct": CTSpec, "lesions": LesionCandidateSpec}
            owner = owners.get(str(loc[0]), ModelManifest) if loc else ModelManifest
            allowed = ", ".join(owner.model_fields)
            problems.append(f"unknown key {where!r} (allowed keys: {allowed})")
        elif err.get("type") == "missing":
            problems.append(f"missing required key {where!r}")
        elif where:
            problems.append(f"{where}: {msg}")
        else:
            problems.append(msg)
    return "; ".join(problems)


def read_manifest(folder: Path) -> ModelManifest:
    """Parse and validate ``folder/manifest.yaml``; ``ModelError`` names the problem."""
    path = folder / MANIFEST_FILE
    prefix = f"model folder {folder}: {MANIFEST_FILE}"
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelError(f"{prefix} is missing") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelError(f"{prefix} cannot be read: {exc}") from None
    except yaml.YAMLError as exc:
        raise ModelError(f"{prefix} is not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ModelError(f"{prefix} must be a mapping of keys to values, not {type(raw).__name__}")
    try:
        return ModelManifest.model_validate(raw)
    except ValidationError as exc:
        raise ModelError(f"{prefix} is invalid: {_format_validation_error(exc)}") from None


def version_key(version: str) -> tuple[Any, ...]:
    """Sort key for semantic versions: 1.10.0 > 1.9.0, 1.0.0 > 1.0.0-rc.1.

    Missing minor/patch count as 0 (``1.2`` == ``1.2.0``); build metadata
    (``+…``) is ignored, as semver says.
    """
    match = _VERSION_RE.match(version)
    if not match:
        return ((-1, -1, -1), 0, ())
    major, minor, patch, pre, _build = match.groups()
    nums = (int(major), int(minor or 0), int(patch or 0))
    if pre is None:
        return (nums, 1, ())
    # Numeric identifiers sort before alphanumeric ones and compare numerically.
    ids = tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in pre.split("."))
    return (nums, 0, ids)


@dataclass(frozen=True)
class ModelRef:
    """A discovered model folder; ``error`` is set when it cannot be used."""

    path: Path
    name: str
    version: str
    application: str = ""
    task: str = ""
    builtin: bool = False
    manifest: ModelManifest | None = field(default=None, compare=False, repr=False)
    error: str | None = None
    #: Folder of the site model with the same name+version that replaces this one.
    shadowed_by: Path | None = None

    @property
    def usable(self) -> bool:
        return self.error is None and self.shadowed_by is None and self.manifest is not None

    @property
    def label(self) -> str:
        return f"{self.name} {self.version}"


class ModelStore:
    """All model folders this node knows about, site folders before built-ins.

    Discovery runs once at construction (``refresh()`` repeats it); it reads
    manifests only, never the (large) ONNX files — those are verified by
    ``load``. A site model with the same name and version as a built-in one
    replaces it, so a hospital can ship a re-validated build of a model.
    """

    def __init__(self, dirs: Sequence[Path | str] = (), builtin_dir: Path | None = BUILTIN_MODEL_DIR) -> None:
        self.dirs = [Path(d).expanduser() for d in dirs]
        self.builtin_dir = Path(builtin_dir) if builtin_dir is not None else None
        self._refs: list[ModelRef] = []
        self.refresh()

    def refresh(self) -> None:
        roots: list[tuple[Path, bool]] = [(d, False) for d in self.dirs]
        if self.builtin_dir is not None:
            roots.append((self.builtin_dir, True))
        refs: list[ModelRef] = []
        winners: dict[tuple[str, Any], Path] = {}
        seen: set[Path] = set()
        for root, builtin in roots:
            for folder in self._model_folders(root, builtin):
                resolved = folder.resolve()
                if resolved in seen:
                    continue
                seen.add(resolved)
                ref = self._describe(folder, builtin)
                if ref.error is None:
                    key = (ref.name, version_key(ref.version))
                    if key in winners:
                        ref = replace(ref, shadowed_by=winners[key])
                        log.info("model overridden", model=ref.label, folder=str(folder), by=str(ref.shadowed_by))
                    else:
                        winners[key] = folder
                refs.append(ref)
        self._refs = refs

    @staticmethod
    def _model_folders(root: Path, builtin: bool) -> list[Path]:
        if not root.is_dir():
            if not builtin:
                log.warning("model folder does not exist", folder=str(root))
            return []
        if (root / MANIFEST_FILE).is_file():  # a model folder named directly
            return [root]
        try:
            return sorted(p for p in root.iterdir() if p.is_dir() and (p / MANIFEST_FILE).is_file())
        except OSError as exc:
            log.warning("model folder cannot be listed", folder=str(root), error=str(exc))
            return []

    @staticmethod
    def _describe(folder: Path, builtin: bool) -> ModelRef:
        try:
            manifest = read_manifest(folder)
        except ModelError as exc:
            log.warning("model folder unusable", folder=str(folder), error=str(exc))
            return ModelRef(path=folder, name=folder.name, version="", builtin=builtin, error=str(exc))
        return ModelRef(
            path=folder,
            name=manifest.name,
            version=manifest.version,
            application=manifest.application,
            task=manifest.task,
            builtin=builtin,
            manifest=manifest,
        )

    def available(self) -> list[ModelRef]:
        """Every folder found, broken and overridden ones included (for admin pages)."""
        return list(self._refs)

    def find(self, name: str | None = None, application: str | None = None, version: str | None = None) -> ModelRef:
        """The matching usable model, the latest version when *version* is None."""
        matches = [
            ref
            for ref in self._refs
            if ref.usable
            and (name is None or ref.name == name)
            and (application is None or ref.application == application)
            and (version is None or version_key(ref.version) == version_key(version))
        ]
        if matches:
            return max(matches, key=lambda r: version_key(r.version))
        wanted = ", ".join(
            f"{k} {v!r}" for k, v in (("name", name), ("application", application), ("version", version)) if v
        )
        usable = ", ".join(f"{r.label} ({r.application})" for r in self._refs if r.usable) or "none"
        msg = f"no usable model with {wanted or 'any name'} is installed (usable: {usable}"
        broken = [r for r in self._refs if r.error and (name is None or r.name == name or name in r.error)]
        if broken:
            msg += "; unusable: " + "; ".join(r.error or "" for r in broken)
        roots = [str(d) for d in self.dirs] + ([str(self.builtin_dir)] if self.builtin_dir else [])
        msg += f"; searched: {', '.join(roots) or 'nothing'}; site folders are set in analyzers.model_dirs)"
        raise ModelError(msg)
