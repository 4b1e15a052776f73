"""ONNX Runtime sessions: provider choice, verifying and loading a model once
per process (:class:`SessionCache`), and the loaded model's calls."""

from __future__ import annotations

import hashlib
import threading
from typing import Any, Sequence

import numpy as np
import structlog

from radnode.analyzers.runtime.manifests import (
    MODEL_FILE,
    SLICE_CLASS_OUTPUT,
    SLICE_SEG_OUTPUT,
    SLICE_TASK,
    ModelError,
    ModelManifest,
    ModelRef,
)
from radnode.analyzers.runtime.sliding_window import (
    _pad_to,
    _window_starts,
    gaussian_importance,
    sigmoid,
    softmax,
)

log = structlog.get_logger(__name__)


DEFAULT_PROVIDERS: tuple[str, ...] = ("CUDAExecutionProvider", "CPUExecutionProvider")


CPU_PROVIDER = "CPUExecutionProvider"


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
        self.output_shapes: dict[str, list[Any]] = {o.name: list(o.shape) for o in outputs}
        if m.task == SLICE_TASK:
            self._check_slice_graph()
            return
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

    def _check_slice_graph(self) -> None:
        """The slice-model contract: ``[N, C, H, W]`` in; ``seg_logits`` ``[N, K, H, W]`` and ``slice_logits`` ``[N, S]`` out.

        C = windows × (2 × context + 1) × inputs, H = W = ``ct.in_plane_size`` where
        the graph fixes them, K = labels, S = ``ct.slice_outputs``. Checked at load,
        so a model exported against another contract fails before any patient data.
        """
        m, p = self.manifest, self._prefix
        ct = m.ct
        assert ct is not None  # the manifest validator requires it for this task
        if len(self.input_shape) != 4:
            raise ModelError(f"{p}: the network input has rank {len(self.input_shape)} {_dims(self.input_shape)}; "
                             f"a {SLICE_TASK} model must take [N, C, H, W]")
        channels = self.input_shape[1]
        if isinstance(channels, int) and channels > 0 and channels != m.input_channels:
            raise ModelError(f"{p}: the network expects {channels} input channels but the manifest implies "
                             f"{m.input_channels} ({len(ct.windows)} windows x {2 * ct.context_slices + 1} slices)")
        for axis in (2, 3):
            d = self.input_shape[axis]
            if isinstance(d, int) and d > 0 and d != ct.in_plane_size:
                raise ModelError(f"{p}: the network takes {_dims(self.input_shape)} but ct.in_plane_size is {ct.in_plane_size}")
        missing = [n for n in (SLICE_SEG_OUTPUT, SLICE_CLASS_OUTPUT) if n not in self.output_shapes]
        if missing:
            raise ModelError(f"{p}: the network has no output named {', '.join(missing)} (outputs: "
                             f"{', '.join(self.output_shapes)}); a {SLICE_TASK} model must name them "
                             f"{SLICE_SEG_OUTPUT} and {SLICE_CLASS_OUTPUT}")
        seg, cls = self.output_shapes[SLICE_SEG_OUTPUT], self.output_shapes[SLICE_CLASS_OUTPUT]
        if len(seg) != 4 or (isinstance(seg[1], int) and seg[1] > 0 and seg[1] != len(m.labels)):
            raise ModelError(f"{p}: {SLICE_SEG_OUTPUT} is {_dims(seg)}; expected [N, {len(m.labels)}, H, W] "
                             f"(one channel per manifest label)")
        if len(cls) != 2 or (isinstance(cls[1], int) and cls[1] > 0 and cls[1] != len(ct.slice_outputs)):
            raise ModelError(f"{p}: {SLICE_CLASS_OUTPUT} is {_dims(cls)}; expected [N, {len(ct.slice_outputs)}] "
                             f"({', '.join(ct.slice_outputs)})")
        self.output_name = SLICE_SEG_OUTPUT
        self.output_shape = seg
        batch = self.input_shape[0]
        self.max_batch = batch if isinstance(batch, int) and batch > 0 else None

    # -- raw calls -------------------------------------------------------------

    def run(self, array: np.ndarray) -> np.ndarray:
        """One raw ONNX Runtime call on ``[N, C, ...]``, shape-checked; returns the first output as float32.

        For classifiers (per-slice ``[N, C, H, W]`` or per-volume) and for the
        sliding window. The checks turn an opaque ORT shape error into one
        that says which input was wrong.
        """
        feed = self._feed(array)
        (out,) = self.session.run([self.output_name], {self.input_name: feed})
        return np.asarray(out, dtype=np.float32)

    def run_outputs(self, array: np.ndarray, names: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """One raw call returning several named outputs as float32 (e.g. a slice model's two heads)."""
        wanted = list(names) if names is not None else list(self.output_shapes)
        unknown = [n for n in wanted if n not in self.output_shapes]
        if unknown:
            raise ModelError(f"{self._prefix}: the network has no output named {', '.join(unknown)}")
        outs = self.session.run(wanted, {self.input_name: self._feed(array)})
        return {n: np.asarray(o, dtype=np.float32) for n, o in zip(wanted, outs)}

    def _feed(self, array: np.ndarray) -> np.ndarray:
        """*array* shape-checked against the graph and the manifest, in the network's dtype."""
        array = np.asarray(array)
        p = self._prefix
        if array.ndim != len(self.input_shape):
            raise ModelError(f"{p}: input has shape {list(array.shape)} but the network takes {_dims(self.input_shape)}")
        m = self.manifest
        if array.shape[1] != m.input_channels:
            what = f"{', '.join(m.inputs)}" if m.ct is None else f"{', '.join(m.inputs)} x {m.ct.channels_per_slice} window/slice channels"
            raise ModelError(f"{p}: input has {array.shape[1]} channels but the manifest names {m.input_channels} ({what})")
        for axis, (have, want) in enumerate(zip(array.shape, self.input_shape)):
            if isinstance(want, int) and want > 0 and have != want:
                raise ModelError(
                    f"{p}: input has shape {list(array.shape)} but the network takes {_dims(self.input_shape)} "
                    f"(axis {axis})"
                )
        return np.ascontiguousarray(array, dtype=self.input_dtype)

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
