"""The model runtime: find a validated ONNX model, load it once, run it on volumes.

A model is a folder holding ``model.onnx`` and ``manifest.yaml``. The manifest
says what the network expects (input roles in channel order, voxel spacing,
patch size, normalization, what its output means, which label values it
produces) and pins the file by sha256, so a hospital can drop in its own
validated model without editing radnode and an admin sees at once when a file
was changed, truncated or mixed up with another model.

Pieces, in the order an analyzer uses them:

* ``ModelStore`` discovers model folders (site folders first, then the ones
  shipped in ``radnode/models``) and picks one by name/application/version.
  A broken folder never stops discovery: it is listed with its error.
* ``SessionCache.get_model(ref)`` verifies and loads a model into an ONNX
  Runtime session once per process (sessions are expensive: seconds and
  hundreds of MB on a GPU) and hands back the same ``LoadedModel`` afterwards.
* ``LoadedModel.predict_volume`` / ``segment`` run a 3D segmentation model
  over a whole volume with a Gaussian-weighted sliding window (as nnU-Net
  does), so a model trained on patches works on any matrix size;
  ``LoadedModel.run`` / ``predict`` are the raw calls that per-slice or
  per-volume classifiers use.
* ``resample_to_spacing`` / ``resample_like`` move images between the
  acquisition grid and the grid the model expects.

Every problem a site can cause (wrong file, wrong manifest, wrong provider)
raises ``ModelError`` with a message naming the model, the file or field and
what to do; it is an ``AnalyzerError``, so the job fails once with that
reason instead of being retried. Errors raised by ONNX Runtime while running
(e.g. GPU out of memory) are left alone: they may be transient.
"""

from __future__ import annotations

import hashlib
import math
import re
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np
import structlog
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from radnode.analyzers.base import AnalyzerError
from radnode.model.validation import error_message, format_loc

log = structlog.get_logger(__name__)

MANIFEST_FILE = "manifest.yaml"
MODEL_FILE = "model.onnx"

#: Models shipped with radnode (one subfolder each).
BUILTIN_MODEL_DIR = Path(__file__).resolve().parent.parent / "models"

DEFAULT_PROVIDERS: tuple[str, ...] = ("CUDAExecutionProvider", "CPUExecutionProvider")
CPU_PROVIDER = "CPUExecutionProvider"


class ModelError(AnalyzerError):
    """A model cannot be found, verified, loaded or fed: an admin must act.

    Subclasses ``AnalyzerError`` because retrying the same job cannot help
    until someone fixes the model folder or the settings.
    """


# -- the manifest ------------------------------------------------------------------

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


class ModelManifest(BaseModel):
    """What ``manifest.yaml`` says about a model; unknown keys are rejected.

    Unknown keys are errors rather than ignored because a misspelt key
    (``spacing`` for ``spacing_mm``) would otherwise silently fall back to a
    default and produce wrong results on real patients.
    """

    model_config = ConfigDict(extra="forbid")

    name: str
    version: str
    task: Literal["segmentation", "classification"]
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
        return self

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
            owner = LabelSpec if loc and loc[0] == "labels" else ModelManifest
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


# -- discovery ---------------------------------------------------------------------


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


# -- loading -----------------------------------------------------------------------


def select_providers(requested: Sequence[str]) -> list[str]:
    """The requested ONNX Runtime providers this installation has, CPU as a last resort.

    A site may configure CUDA on a machine without a GPU build of ONNX Runtime
    (or a typo); running on CPU slowly is better than failing every job, but
    the admin must hear about it.
    """
    import onnxruntime as ort

    installed = list(ort.get_available_providers())
    chosen = [p for p in dict.fromkeys(requested) if p in installed]
    missing = [p for p in requested if p not in installed]
    if missing:
        log.warning(
            "onnxruntime providers not available",
            missing=missing,
            installed=installed,
            hint="install onnxruntime-gpu and the CUDA libraries, or fix analyzers.providers",
        )
    if not chosen:
        log.warning("falling back to the CPU provider", requested=list(requested))
        chosen = [CPU_PROVIDER]
    return chosen


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _dims(shape: Sequence[Any]) -> str:
    return "[" + ", ".join(str(d) if isinstance(d, int) else (d or "?") for d in shape) + "]"


_ORT_TO_NUMPY = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64}


def load(ref: ModelRef, providers: Sequence[str] = DEFAULT_PROVIDERS, threads: int = 0) -> LoadedModel:
    """Verify *ref*'s files and graph, and create its ONNX Runtime session.

    The bytes that were hashed are the bytes handed to ONNX Runtime, so a file
    swapped between the check and the load cannot slip through.
    """
    import onnxruntime as ort

    if ref.error is not None or ref.manifest is None:
        raise ModelError(ref.error or f"model folder {ref.path}: no manifest")
    manifest = ref.manifest
    prefix = f"model {manifest.name} {manifest.version}"
    onnx_path = ref.path / MODEL_FILE
    try:
        data = onnx_path.read_bytes()
    except FileNotFoundError:
        raise ModelError(f"{prefix}: {MODEL_FILE} is missing from {ref.path} (copy the complete model folder)") from None
    except OSError as exc:
        raise ModelError(f"{prefix}: {onnx_path} cannot be read: {exc}") from None
    digest = _sha256(data)
    if digest != manifest.sha256:
        raise ModelError(
            f"{prefix}: {MODEL_FILE} sha256 mismatch (file changed or corrupt): expected {manifest.sha256}, got {digest}"
            f" ({onnx_path}; copy the model again from its validated source)"
        )

    chosen = select_providers(providers)
    options = ort.SessionOptions()
    options.intra_op_num_threads = int(threads)
    options.log_severity_level = 3  # we log fallbacks ourselves; keep ORT's chatter out of the job logs
    try:
        session = ort.InferenceSession(data, sess_options=options, providers=chosen)
    except Exception as exc:  # ORT raises its own pybind exception types
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"{prefix}: {MODEL_FILE} is not a valid ONNX file: {text}") from None
    actual = list(session.get_providers())
    if actual[:1] != chosen[:1]:
        log.warning("onnxruntime did not use the preferred provider", model=ref.label, wanted=chosen, using=actual)
    model = LoadedModel(ref=ref, manifest=manifest, session=session, providers=actual)
    log.info("model loaded", model=ref.label, folder=str(ref.path), providers=actual, threads=threads)
    return model


class LoadedModel:
    """A verified model with its ONNX Runtime session (thread-safe to run)."""

    def __init__(self, ref: ModelRef, manifest: ModelManifest, session: Any, providers: list[str]) -> None:
        self.ref = ref
        self.manifest = manifest
        self.session = session
        self.providers = providers
        self._prefix = f"model {manifest.name} {manifest.version}"
        self._check_graph()
        self._weights: np.ndarray | None = None
        self._weights_lock = threading.Lock()

    # -- graph checks (at load) ------------------------------------------------

    def _check_graph(self) -> None:
        """Refuse a model whose graph cannot match its manifest, before any patient data."""
        m, p = self.manifest, self._prefix
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise ModelError(f"{p}: the network has {len(inputs)} inputs; radnode feeds exactly one tensor [N, C, ...]")
        inp = inputs[0]
        if inp.type not in _ORT_TO_NUMPY:
            raise ModelError(f"{p}: the network input is {inp.type}; radnode feeds float tensors")
        self.input_name: str = inp.name
        self.input_shape: list[Any] = list(inp.shape)
        self.input_dtype = _ORT_TO_NUMPY[inp.type]
        outputs = self.session.get_outputs()
        if not outputs:
            raise ModelError(f"{p}: the network has no outputs")
        if len(outputs) > 1:
            log.info("model has several outputs; using the first", model=self.ref.label, output=outputs[0].name)
        out = outputs[0]
        self.output_name: str = out.name
        self.output_shape: list[Any] = list(out.shape)
        n_in, n_lab = len(m.inputs), len(m.labels)
        if m.task == "segmentation":
            if len(self.input_shape) != 5:
                raise ModelError(
                    f"{p}: the network input has rank {len(self.input_shape)} {_dims(self.input_shape)}; "
                    "a segmentation model must take [N, C, D, H, W]"
                )
            if len(self.output_shape) != 5:
                raise ModelError(
                    f"{p}: the network output has rank {len(self.output_shape)} {_dims(self.output_shape)}; "
                    "a segmentation model must produce [N, K, D, H, W]"
                )
            spatial = self.input_shape[2:]
            patch = m.patch_zyx
            if any(isinstance(d, int) and d > 0 and d != q for d, q in zip(spatial, patch)):
                raise ModelError(
                    f"{p}: the network expects patches of {_dims(spatial)} (z, y, x) voxels but the manifest's "
                    f"patch_size (x, y, z) is {list(m.patch_size or ())}"
                )
        elif len(self.input_shape) < 2:
            raise ModelError(f"{p}: the network input {_dims(self.input_shape)} has no channel axis [N, C, ...]")
        channels = self.input_shape[1] if len(self.input_shape) > 1 else None
        if isinstance(channels, int) and channels > 0 and channels != n_in:
            raise ModelError(
                f"{p}: the network expects {channels} input channels but the manifest names {n_in} "
                f"input{'s' if n_in != 1 else ''} ({', '.join(m.inputs)})"
            )
        classes = self.output_shape[1] if len(self.output_shape) > 1 else None
        if len(self.output_shape) < 2:
            raise ModelError(f"{p}: the network output {_dims(self.output_shape)} has no class axis [N, K, ...]")
        if isinstance(classes, int) and classes > 0 and classes != n_lab:
            raise ModelError(
                f"{p}: the network produces {classes} output channels but the manifest lists {n_lab} "
                f"label{'s' if n_lab != 1 else ''}"
            )
        batch = self.input_shape[0]
        self.max_batch: int | None = batch if isinstance(batch, int) and batch > 0 else None

    # -- raw calls -------------------------------------------------------------

    def run(self, array: np.ndarray) -> np.ndarray:
        """One raw ONNX Runtime call on ``[N, C, ...]``, shape-checked; returns the first output as float32.

        For classifiers (per-slice ``[N, C, H, W]`` or per-volume) and for the
        sliding window. The checks turn an opaque ORT shape error into one
        that says which input was wrong.
        """
        array = np.asarray(array)
        p = self._prefix
        if array.ndim != len(self.input_shape):
            raise ModelError(f"{p}: input has shape {list(array.shape)} but the network takes {_dims(self.input_shape)}")
        if array.shape[1] != len(self.manifest.inputs):
            raise ModelError(
                f"{p}: input has {array.shape[1]} channels but the manifest names {len(self.manifest.inputs)} "
                f"({', '.join(self.manifest.inputs)})"
            )
        for axis, (have, want) in enumerate(zip(array.shape, self.input_shape)):
            if isinstance(want, int) and want > 0 and have != want:
                raise ModelError(
                    f"{p}: input has shape {list(array.shape)} but the network takes {_dims(self.input_shape)} "
                    f"(axis {axis})"
                )
        feed = np.ascontiguousarray(array, dtype=self.input_dtype)
        (out,) = self.session.run([self.output_name], {self.input_name: feed})
        return np.asarray(out, dtype=np.float32)

    def to_probabilities(self, raw: np.ndarray, axis: int = 1) -> np.ndarray:
        """Turn network output into probabilities as the manifest's ``output`` says."""
        if self.manifest.output == "logits":
            return softmax(raw, axis=axis)
        if self.manifest.output == "sigmoid-logits":
            return sigmoid(raw)
        return raw.astype(np.float32, copy=False)

    def predict(self, array: np.ndarray) -> np.ndarray:
        """``run`` followed by softmax/sigmoid: class probabilities ``[N, K, ...]`` for classifiers."""
        return self.to_probabilities(self.run(array), axis=1)

    # -- sliding window --------------------------------------------------------

    def gaussian_weights(self) -> np.ndarray:
        """The (z, y, x) blending weights for this model's patch (computed once)."""
        with self._weights_lock:
            if self._weights is None:
                self._weights = gaussian_importance(self.manifest.patch_zyx)
            return self._weights

    def predict_volume(
        self,
        channels: np.ndarray,
        *,
        overlap: float = 0.5,
        batch_size: int = 1,
        pad_value: float | None = None,
    ) -> np.ndarray:
        """Class probabilities ``(K, Z, Y, X)`` float32 for a ``(C, Z, Y, X)`` volume.

        Windows of the manifest's patch size step over the volume with
        *overlap* and are blended with Gaussian weights, so the seams of
        patch-trained networks do not show. Volumes smaller than the patch
        are padded (0 after z-score normalization, where 0 is background;
        otherwise each channel's minimum, e.g. air in CT) and cropped back.
        Input must already be resampled and normalized as the manifest says.
        """
        m, p = self.manifest, self._prefix
        if m.task != "segmentation":
            raise ModelError(f"{p}: predict_volume needs a segmentation model; this one is a {m.task} model")
        if not 0.0 <= overlap < 1.0:
            raise ValueError(f"overlap must be in [0, 1), got {overlap}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        channels = np.asarray(channels)
        if channels.ndim != 4 or channels.shape[0] != len(m.inputs):
            raise ModelError(
                f"{p}: expected channels (C={len(m.inputs)}: {', '.join(m.inputs)}, Z, Y, X), "
                f"got shape {list(channels.shape)}"
            )
        if not np.isfinite(channels).all():
            raise ModelError(f"{p}: input volume contains NaN or infinite values (check the preprocessing)")
        channels = channels.astype(np.float32, copy=False)
        if self.max_batch is not None:
            batch_size = min(batch_size, self.max_batch)

        patch = m.patch_zyx
        shape = channels.shape[1:]
        padded, crop = _pad_to(channels, patch, self._pad_values(channels, pad_value))
        pshape = padded.shape[1:]
        starts = [_window_starts(s, q, overlap) for s, q in zip(pshape, patch)]
        windows = [(z, y, x) for z in starts[0] for y in starts[1] for x in starts[2]]
        weights = self.gaussian_weights()
        n_classes = len(m.labels)
        acc = np.zeros((n_classes, *pshape), dtype=np.float32)
        norm = np.zeros(pshape, dtype=np.float32)
        for first in range(0, len(windows), batch_size):
            group = windows[first : first + batch_size]
            slices = [tuple(slice(s, s + q) for s, q in zip(start, patch)) for start in group]
            batch = np.stack([padded[(slice(None), *sl)] for sl in slices])
            probs = self.to_probabilities(self.run(batch), axis=1)
            if probs.shape[1:] != (n_classes, *patch):
                raise ModelError(
                    f"{p}: the network returned {list(probs.shape[1:])} for a patch of {list(patch)}; "
                    f"expected [{n_classes}, {', '.join(map(str, patch))}]"
                )
            for sl, prob in zip(slices, probs):
                acc[(slice(None), *sl)] += prob * weights
                norm[sl] += weights
        acc /= norm  # every voxel is covered by at least one window
        log.debug("sliding window done", model=self.ref.label, shape=list(shape), windows=len(windows))
        return np.ascontiguousarray(acc[(slice(None), *crop)])

    def _pad_values(self, channels: np.ndarray, pad_value: float | None) -> np.ndarray:
        if pad_value is not None:
            return np.full(channels.shape[0], pad_value, dtype=np.float32)
        if self.manifest.normalization == "zscore-brain":
            return np.zeros(channels.shape[0], dtype=np.float32)
        return channels.reshape(channels.shape[0], -1).min(axis=1).astype(np.float32)

    def segment(self, channels: np.ndarray, *, overlap: float = 0.5, batch_size: int = 1) -> np.ndarray:
        """A ``(Z, Y, X)`` uint8 label map: argmax of ``predict_volume`` mapped to label values.

        For multi-label (``sigmoid-logits``) models the argmax picks the most
        probable channel; threshold ``predict_volume`` yourself for overlapping regions.
        """
        probs = self.predict_volume(channels, overlap=overlap, batch_size=batch_size)
        return self.manifest.label_values[np.argmax(probs, axis=0)]


# -- numeric helpers -----------------------------------------------------------------


def softmax(x: np.ndarray, axis: int = 1) -> np.ndarray:
    """Numerically stable softmax in float32."""
    x = np.asarray(x, dtype=np.float32)
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    e /= e.sum(axis=axis, keepdims=True)
    return e


def sigmoid(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return np.asarray(0.5 * (1.0 + np.tanh(0.5 * x)), dtype=np.float32)  # overflow-free form


def gaussian_importance(patch: Sequence[int], sigma_scale: float = 1.0 / 8, floor: float = 1e-4) -> np.ndarray:
    """Gaussian blending weights over a patch, peak 1 in the middle (nnU-Net's choice).

    Network predictions are least reliable near patch borders, where the
    receptive field runs into padding; weighting the centre up hides seams.
    Computed analytically about the exact centre (so it is symmetric for
    even sizes too) and floored so border voxels covered by one window only
    never divide by ~0.
    """
    axes = []
    for n in patch:
        sigma = max(n * sigma_scale, 1e-6)
        coords = np.arange(n, dtype=np.float64) - (n - 1) / 2.0
        axes.append(np.exp(-0.5 * (coords / sigma) ** 2))
    w = axes[0][:, None, None] * axes[1][None, :, None] * axes[2][None, None, :]
    w /= w.max()
    return np.maximum(w, floor).astype(np.float32)


def _window_starts(size: int, patch: int, overlap: float) -> list[int]:
    """Evenly spread window starts covering [0, size) with at least *overlap* (nnU-Net's rule)."""
    if size <= patch:
        return [0]
    target_step = max(1.0, patch * (1.0 - overlap))
    count = int(math.ceil((size - patch) / target_step)) + 1
    step = (size - patch) / (count - 1)
    return sorted({int(round(step * i)) for i in range(count)})


def _pad_to(
    channels: np.ndarray, patch: Sequence[int], values: np.ndarray
) -> tuple[np.ndarray, tuple[slice, slice, slice]]:
    """Pad (C, Z, Y, X) symmetrically up to *patch* where smaller; return the crop back."""
    shape = channels.shape[1:]
    if all(s >= q for s, q in zip(shape, patch)):
        return channels, (slice(None), slice(None), slice(None))
    before = [max(0, q - s) // 2 for s, q in zip(shape, patch)]
    new_shape = tuple(max(s, q) for s, q in zip(shape, patch))
    padded = np.empty((channels.shape[0], *new_shape), dtype=np.float32)
    padded[...] = values.reshape(-1, 1, 1, 1)
    crop = tuple(slice(b, b + s) for b, s in zip(before, shape))
    padded[(slice(None), *crop)] = channels
    return padded, crop  # type: ignore[return-value]


# -- the per-process session cache --------------------------------------------------


class SessionCache:
    """Loaded models of one worker process, keyed by file, checksum and providers.

    Creating an ONNX Runtime session costs seconds (and GPU memory), so each
    model is loaded once per process and shared by all jobs and threads.
    Failures are not cached: once the admin fixes the folder, the next job
    loads it.
    """

    def __init__(self, providers: Sequence[str] = DEFAULT_PROVIDERS, threads: int = 0) -> None:
        self.providers = tuple(providers)
        self.threads = int(threads)
        self._models: dict[tuple[str, str, tuple[str, ...], int], LoadedModel] = {}
        self._locks: dict[tuple[str, str, tuple[str, ...], int], threading.Lock] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, analyzers: Any) -> SessionCache:
        """From ``Settings.analyzers`` (providers, threads)."""
        return cls(providers=analyzers.providers, threads=analyzers.threads)

    def _key(self, ref: ModelRef) -> tuple[str, str, tuple[str, ...], int]:
        sha = ref.manifest.sha256 if ref.manifest is not None else ""
        return (str(ref.path.resolve()), sha, self.providers, self.threads)

    def get_model(self, ref: ModelRef) -> LoadedModel:
        key = self._key(ref)
        with self._lock:
            model = self._models.get(key)
            if model is not None:
                return model
            key_lock = self._locks.setdefault(key, threading.Lock())
        with key_lock:  # one load per model even when several threads ask at once
            with self._lock:
                model = self._models.get(key)
            if model is None:
                model = load(ref, providers=self.providers, threads=self.threads)
                with self._lock:
                    self._models[key] = model
            return model

    def loaded(self) -> list[LoadedModel]:
        with self._lock:
            return list(self._models.values())

    def clear(self) -> None:
        """Drop all sessions (frees GPU memory once no job holds them)."""
        with self._lock:
            self._models.clear()
            self._locks.clear()


_default_cache: SessionCache | None = None
_default_lock = threading.Lock()


def default_cache() -> SessionCache:
    """This process's shared cache, created on first use with default providers.

    A worker that reads settings should call ``set_default_cache(
    SessionCache.from_settings(settings.analyzers))`` once at start.
    """
    global _default_cache
    with _default_lock:
        if _default_cache is None:
            _default_cache = SessionCache()
        return _default_cache


def set_default_cache(cache: SessionCache) -> None:
    """Install the process's cache (at worker start, from settings)."""
    global _default_cache
    with _default_lock:
        _default_cache = cache


# -- resampling (SimpleITK) ----------------------------------------------------------


def resample_to_spacing(
    image: Any, spacing_xyz: Sequence[float], interpolator: int | None = None, default_value: float = 0.0
) -> Any:
    """Resample a ``sitk.Image`` onto a grid of *spacing_xyz* mm covering the same field of view.

    The new grid keeps the direction and the outer corner of the first
    voxel, so the volume's extent is preserved (no half-voxel shift) and
    ``resample_like`` can bring labels back onto the original grid. Linear
    interpolation by default; use ``sitk.sitkNearestNeighbor`` for labels.
    """
    import SimpleITK as sitk

    if interpolator is None:
        interpolator = sitk.sitkLinear
    spacing = [float(s) for s in spacing_xyz]
    if len(spacing) != image.GetDimension() or not all(s > 0 for s in spacing):
        raise ValueError(f"spacing must be {image.GetDimension()} positive numbers, got {list(spacing_xyz)}")
    old_spacing = np.array(image.GetSpacing(), dtype=np.float64)
    old_size = np.array(image.GetSize(), dtype=np.float64)
    new_spacing = np.array(spacing)
    new_size = [max(1, int(round(n))) for n in old_size * old_spacing / new_spacing]
    direction = np.array(image.GetDirection(), dtype=np.float64).reshape(image.GetDimension(), -1)
    shift = direction @ ((new_spacing - old_spacing) / 2.0)
    origin = np.array(image.GetOrigin(), dtype=np.float64) + shift
    return sitk.Resample(
        image,
        new_size,
        sitk.Transform(),
        interpolator,
        [float(o) for o in origin],
        spacing,
        image.GetDirection(),
        default_value,
        image.GetPixelID(),
    )


def resample_like(image: Any, reference: Any, interpolator: int | None = None, default_value: float = 0.0) -> Any:
    """Resample *image* onto *reference*'s grid (e.g. model-space labels back to the acquisition).

    Nearest neighbour by default, since this usually carries label maps back.
    """
    import SimpleITK as sitk

    if interpolator is None:
        interpolator = sitk.sitkNearestNeighbor
    return sitk.Resample(image, reference, sitk.Transform(), interpolator, default_value, image.GetPixelID())
