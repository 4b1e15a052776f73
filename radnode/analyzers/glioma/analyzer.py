"""Glioma segmentation: T1, T1c, T2 and FLAIR in; tumour sub-regions and
their volumes out (the 2020 platform's flagship application).

Pipeline: nipype preprocessing (DICOM → volumes with patient geometry, rigid
registration to T1c, one resampling onto a 1 mm grid aligned with T1c, brain
extraction, optional N4, z-score in the brain) → the ONNX model named by its
manifest, at the model's own spacing, by sliding window → class
probabilities resampled straight onto the native T1c geometry and
arg-maxed there (one interpolation, no label-of-labels resampling) →
measurements. The label map lives in the T1c series' geometry because that
is the series the DICOM SEG references.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import SimpleITK as sitk
import structlog
from pydantic import BaseModel, ConfigDict

from radnode.analyzers.base import (
    AnalyzerError,
    AnalyzerInputs,
    AnalyzerResult,
    AnalyzerSpec,
    LabelMap,
    Measurement,
    ModelInfo,
    Progress,
    Segment,
)
from radnode.analyzers.glioma.followup import PRIOR_ROW_NAMES, annotate
from radnode.analyzers.glioma.lesions import IslandRule, clean_label_map, find_lesions
from radnode.analyzers.glioma.measure import glioma_measurements
from radnode.analyzers.model_backed import model_info
from radnode.analyzers.preprocessing import run_preprocessing
from radnode.analyzers.registry import GLIOMA
from radnode.analyzers.runtime import (
    ModelError,
    ModelRef,
    ModelStore,
    SessionCache,
    read_model_grid,
    resample_like,
)

log = structlog.get_logger(__name__)

ROLES = GLIOMA.required  # declared once, in the registry
VERSION = "0.1.0"

#: BraTS label values → segment names used in SEG, SR and the report.
SEGMENT_NAMES = {1: "Necrotic tumor core", 2: "Peritumoral edema", 3: "Enhancing tumor"}


class GliomaOptions(BaseModel):
    """Per-job options (routing YAML ``options:`` or the web form)."""

    model_config = ConfigDict(extra="forbid")

    bias_field_correct: bool = False
    brain_extraction: Literal["deepbet", "template"] = "deepbet"
    #: A specific model by name (default: the newest model for application "glioma").
    model: str | None = None
    #: Also write the foreground probability and the foreground arg-max (benchmarks only).
    save_probabilities: bool = False
    #: Remove implausible islands and group lesions (see analyzers/glioma/lesions.py);
    #: off only to measure what the rule changes.
    postprocess: bool = True


def labels_from_probabilities(probs: np.ndarray, values: np.ndarray, foreground_threshold: float | None) -> np.ndarray:
    """Label map from per-label probabilities (label axis first; index 0 is background).

    Without a threshold: the arg-max. With one: foreground where
    1 − P(background) ≥ *foreground_threshold*, labelled with the most probable
    foreground label (0.0 gives every voxel its foreground arg-max).
    """
    if foreground_threshold is None:
        return values[np.argmax(probs, axis=0)].astype(np.uint8)
    best_fg = values[1:][np.argmax(probs[1:], axis=0)].astype(np.uint8)
    return np.where(1.0 - probs[0] >= foreground_threshold, best_fg, 0).astype(np.uint8)


def _write_like(array: np.ndarray, reference: sitk.Image, path: Path) -> None:
    image = sitk.GetImageFromArray(array.astype(np.float32) if array.dtype.kind == "f" else array)
    image.CopyInformation(reference)
    sitk.WriteImage(image, str(path))


class GliomaAnalyzer:
    """Implements the analyzer protocol for application ``glioma``."""

    def __init__(self, store: ModelStore | None = None, cache: SessionCache | None = None) -> None:
        self.store = store or ModelStore()
        self.cache = cache or SessionCache()
        self.model_ref = self._find(None)
        manifest = self.model_ref.manifest
        assert manifest is not None
        self.spec = AnalyzerSpec(
            name="glioma",
            version=VERSION,
            description="Glioma sub-region segmentation (necrotic core, oedema, enhancing tumour) and volumes",
            required_roles=ROLES,
            options=GliomaOptions,
            model=ModelInfo(
                name=manifest.name,
                version=manifest.version,
                demo=manifest.demo,
                intended_use=manifest.intended_use,
            ),
            outputs=("seg", "sr", "pdf", "secondary_capture"),
            prior_rows=PRIOR_ROW_NAMES,
        )

    @classmethod
    def from_settings(cls, settings: Any) -> "GliomaAnalyzer":
        if settings is None:
            return cls()
        return cls(ModelStore(settings.analyzers.model_dirs), SessionCache.from_settings(settings.analyzers))

    def follow_up(self, result: AnalyzerResult, prior_rows: Sequence[tuple[str, Mapping[str, float]]],
                  patient_key: str) -> list[Measurement]:
        """Lesion tracking and the RANO comparison with the prior exams (see ``followup.py``)."""
        return annotate(result, prior_rows, patient_key, self.spec.name)

    def _find(self, name: str | None) -> ModelRef:
        try:
            return self.store.find(name=name, application="glioma")
        except ModelError as exc:
            raise AnalyzerError(str(exc)) from exc

    def run(self, inputs: AnalyzerInputs, workdir: Path, progress: Progress) -> AnalyzerResult:
        opts = inputs.options
        assert isinstance(opts, GliomaOptions)
        timings: dict[str, float] = {}
        ref = self._find(opts.model) if opts.model else self.model_ref
        model = self.cache.get_model(ref)  # fails fast (sha256, graph) before minutes of preprocessing
        manifest = model.manifest
        missing = [r for r in manifest.inputs if r not in inputs.series]
        if missing:
            raise AnalyzerError(f"model {manifest.name} {manifest.version} needs inputs {manifest.inputs}; missing {missing}")

        progress("preprocessing")
        pre = run_preprocessing(
            {role: list(s.files) for role, s in inputs.series.items() if role in manifest.inputs},
            workdir / "preprocessing",
            reference_role="t1c",
            spacing_mm=1.0,
            brain_extraction=opts.brain_extraction,
            bias_correction=opts.bias_field_correct,
        )
        timings.update({f"preprocess_{k}": v for k, v in pre.timings.items()})

        progress("inferring")
        t0 = time.perf_counter()
        spacing = tuple(float(s) for s in manifest.spacing_mm)  # type: ignore[union-attr]
        def model_grid(path: Path) -> sitk.Image:
            return read_model_grid(path, manifest.orientation, spacing)

        channels = []
        for role in manifest.inputs:
            img = model_grid(pre.images[role])
            channels.append(sitk.GetArrayFromImage(img))
        grid = img
        mask = model_grid(pre.brain_mask)
        brain = sitk.GetArrayFromImage(mask) > 0.5
        probs = model.predict_volume(np.stack(channels).astype(np.float32))
        probs[:, ~brain] = 0.0
        probs[0][~brain] = 1.0  # outside the brain is background
        timings["infer"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        reference = sitk.ReadImage(str(pre.reference))
        native = []
        for k in range(probs.shape[0]):
            p = sitk.GetImageFromArray(probs[k])
            p.CopyInformation(grid)
            native.append(sitk.GetArrayFromImage(resample_like(p, reference, sitk.sitkLinear, default_value=1.0 if k == 0 else 0.0)))
        values = manifest.label_values
        stacked = np.stack(native)
        raw = labels_from_probabilities(stacked, values, manifest.foreground_threshold)
        if opts.save_probabilities:  # benchmarks: re-threshold without re-running inference
            _write_like(1.0 - stacked[0], reference, workdir / "foreground_probability.nii.gz")
            _write_like(labels_from_probabilities(stacked, values, 0.0).astype(np.uint8), reference, workdir / "labels_foreground_argmax.nii.gz")
        del stacked
        brain_native = sitk.GetArrayFromImage(resample_like(sitk.Cast(sitk.ReadImage(str(pre.brain_mask)) > 0, sitk.sitkUInt8),
                                                            reference, sitk.sitkNearestNeighbor, default_value=0)) > 0
        raw_image = sitk.GetImageFromArray(raw)
        raw_image.CopyInformation(reference)
        sitk.WriteImage(raw_image, str(workdir / "labels_raw.nii.gz"))  # before post-processing (benchmarks)
        sx, sy, sz = reference.GetSpacing()
        if opts.postprocess:
            labels, lesion_map, clean = clean_label_map(raw, (sz, sy, sx), brain_native, IslandRule())
        else:  # every connected component is a lesion, nothing removed
            labels, lesion_map, clean = clean_label_map(raw, (sz, sy, sx), None, IslandRule(0, 0, 0, 0, 0))
        label_image = sitk.GetImageFromArray(labels)
        label_image.CopyInformation(reference)
        sitk.WriteImage(label_image, str(workdir / "labels.nii.gz"))
        lesions = find_lesions(label_image, lesion_map, brain_native)
        measures, summary = glioma_measurements(label_image, lesions)
        summary["postprocessing"] = clean.as_dict()
        timings["postprocess"] = time.perf_counter() - t0

        segments = tuple(
            Segment(
                value=spec_label.value,
                name=SEGMENT_NAMES.get(spec_label.value, spec_label.name),
                property_type=tuple(spec_label.snomed) if spec_label.snomed else None,  # type: ignore[arg-type]
            )
            for spec_label in manifest.labels
            if spec_label.value != 0
        )
        flags = []
        if summary["volumes_ml"]["whole_tumor"] == 0:
            flags.append("no tumour found")
        if len(lesions) > 1:
            flags.append(f"multifocal: {len(lesions)} lesions")
        log.info("glioma segmented", job_id=inputs.job_id, whole_tumor_ml=round(summary["volumes_ml"]["whole_tumor"], 2),
                 **{k: round(v, 2) for k, v in timings.items()})
        return AnalyzerResult(
            label_maps=[LabelMap("glioma", labels, reference_role="t1c", segments=segments)],
            measurements=measures,
            flags=flags,
            extra={
                "summary": summary,
                "timings": timings,
                "labels_nifti": str(workdir / "labels.nii.gz"),
                "labels_raw_nifti": str(workdir / "labels_raw.nii.gz"),
                "brain_mask_nifti": str(pre.brain_mask),
                "lesions": lesions,
                "brain_volume_ml": pre.brain_volume_ml,
                "preprocessing_workdir": str(pre.workdir),
                "model": {"name": manifest.name, "version": manifest.version, "demo": manifest.demo},
            },
            model=model_info(manifest),
        )
