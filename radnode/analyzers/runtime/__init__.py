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

The package: ``manifests`` (manifests and discovery), ``sessions`` (ONNX
Runtime sessions and their cache, the loaded model), ``sliding_window``,
``resampling``. Everything public is re-exported here.
"""

from radnode.analyzers.runtime.manifests import (
    BUILTIN_MODEL_DIR,
    MANIFEST_FILE,
    MODEL_FILE,
    LabelSpec,
    LesionCandidateSpec,
    ModelError,
    ModelManifest,
    ModelRef,
    ModelStore,
    read_manifest,
    version_key,
)
from radnode.analyzers.runtime.resampling import (
    bounding_box,
    read_model_grid,
    resample_like,
    resample_to_spacing,
)
from radnode.analyzers.runtime.sessions import (
    CPU_PROVIDER,
    DEFAULT_PROVIDERS,
    LoadedModel,
    SessionCache,
    default_cache,
    load,
    select_providers,
    set_default_cache,
)
from radnode.analyzers.runtime.sliding_window import (
    gaussian_importance,
    sigmoid,
    softmax,
)

__all__ = [
    "BUILTIN_MODEL_DIR",
    "CPU_PROVIDER",
    "DEFAULT_PROVIDERS",
    "LabelSpec",
    "LesionCandidateSpec",
    "LoadedModel",
    "MANIFEST_FILE",
    "MODEL_FILE",
    "ModelError",
    "ModelManifest",
    "ModelRef",
    "ModelStore",
    "SessionCache",
    "default_cache",
    "gaussian_importance",
    "load",
    "read_manifest",
    "bounding_box",
    "read_model_grid",
    "resample_like",
    "resample_to_spacing",
    "select_providers",
    "set_default_cache",
    "sigmoid",
    "softmax",
    "version_key",
]
