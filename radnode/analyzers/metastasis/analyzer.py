"""Brain metastases: every enhancing lesion found, measured and tracked lesion by lesion.

Pipeline: nipype preprocessing shared with glioma (DICOM → volumes with
patient geometry, rigid registration of FLAIR — optional — to the T1
post-contrast, one resampling onto a 1 mm grid aligned with T1c, brain
extraction, z-score in the brain) → the ONNX model named by its manifest
(T1c channel; sliding window) → lesion probability inside the brain → the
candidate step tuned for small lesions (:mod:`.candidates`: hysteresis,
minimum size and confidence, look-alike shapes) on the model's 1 mm grid →
lesion map on the native T1c grid (the series the SEG references), lesions
numbered by size → per-lesion measurements (:mod:`.measure`) in the brain
frame (:mod:`.frame`) → tracking against the patient's prior exam
(:mod:`.tracking`, called by the worker through :meth:`follow_up`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import SimpleITK as sitk
import structlog
from pydantic import BaseModel, ConfigDict, Field

from radnode.analyzers.base import (
    AnalyzerError,
    AnalyzerInputs,
    AnalyzerResult,
    AnalyzerSpec,
    LabelMap,
    Measurement,
    ModelInfo,
    Progress,
)
from radnode.analyzers.metastasis.candidates import find_candidates, rule_from_manifest
from radnode.analyzers.metastasis.frame import brain_frame
from radnode.analyzers.metastasis.measure import measure_lesions, renumber_by_size
from radnode.analyzers.metastasis.tracking import PRIOR_ROW_NAMES, annotate, compare, result_rows, summary
from radnode.analyzers.preprocessing import run_preprocessing
from radnode.analyzers.registry import METASTASIS
from radnode.analyzers.model_backed import ModelBackedAnalyzer, model_info
from radnode.analyzers.runtime import bounding_box, read_model_grid
from radnode.model.lesion_rows import metastasis_segments
from radnode.uids import patient_key_of

log = structlog.get_logger(__name__)

VERSION = "0.1.0"
APPLICATION = METASTASIS.name


class MetastasisOptions(BaseModel):
    """Per-job options (routing YAML ``options:`` or the web form)."""

    model_config = ConfigDict(extra="forbid")

    brain_extraction: Literal["deepbet", "template"] = "deepbet"
    #: A specific model by name (default: the newest model for application "metastasis").
    model: str | None = None
    #: Also write the lesion probability map on the model grid (benchmarks only).
    save_probabilities: bool = False
    #: Overlap of neighbouring sliding windows (fraction of the patch): 0.5 blends every voxel from
    #: up to eight windows; lower is faster (BENCHMARKS.md gives both).
    overlap: float = Field(default=0.5, ge=0.0, le=0.75)


class MetastasisAnalyzer(ModelBackedAnalyzer):
    """Implements the analyzer protocol (and the follow-up protocol) for application ``metastasis``."""

    application = APPLICATION

    def describe(self, model: ModelInfo | None) -> AnalyzerSpec:
        return AnalyzerSpec(
            name=APPLICATION,
            version=VERSION,
            description="Brain metastasis detection and segmentation, lesion by lesion, tracked across exams",
            required_roles=METASTASIS.required,
            optional_roles=METASTASIS.optional,
            options=MetastasisOptions,
            model=model,
            outputs=("seg", "sr", "pdf", "secondary_capture"),
            prior_rows=PRIOR_ROW_NAMES,
        )

    def follow_up(self, result: AnalyzerResult, prior_rows: Sequence[tuple[str, Mapping[str, float]]],
                  patient_key: str) -> list[Measurement]:
        """Lesion matching against the patient's latest prior exam (see ``tracking.py``)."""
        return annotate(result, prior_rows, patient_key, self.spec.name)

    def run(self, inputs: AnalyzerInputs, workdir: Path, progress: Progress) -> AnalyzerResult:
        opts = inputs.options
        assert isinstance(opts, MetastasisOptions)
        timings: dict[str, float] = {}
        model = self.cache.get_model(self.model_ref_for(opts.model))  # fails fast (sha256, graph) before preprocessing
        manifest = model.manifest
        missing = [r for r in manifest.inputs if r not in inputs.series]
        if missing:
            raise AnalyzerError(f"model {manifest.name} {manifest.version} needs inputs {manifest.inputs}; missing {missing}")
        rule = rule_from_manifest(manifest)
        # FLAIR (optional) is registered onto T1c even when the model reads T1c alone: the oedema it shows
        # is in the work folder for a reader, and a site's model that takes FLAIR gets it on the same grid.
        roles = [r for r in ("t1c", "flair") if r in inputs.series] + [r for r in manifest.inputs if r not in ("t1c", "flair")]

        progress("preprocessing")
        pre = run_preprocessing({role: list(inputs.series[role].files) for role in roles}, workdir / "preprocessing",
                                reference_role="t1c", spacing_mm=1.0, brain_extraction=opts.brain_extraction)
        timings.update({f"preprocess_{k}": v for k, v in pre.timings.items()})

        progress("inferring")
        t0 = time.perf_counter()
        spacing = tuple(float(s) for s in manifest.spacing_mm)  # type: ignore[union-attr]
        channels = [sitk.GetArrayFromImage(read_model_grid(pre.images[r], manifest.orientation, spacing))  # type: ignore[arg-type]
                    for r in manifest.inputs]
        grid = read_model_grid(pre.brain_mask, manifest.orientation, spacing)  # type: ignore[arg-type]
        brain = sitk.GetArrayFromImage(grid) > 0.5
        if not brain.any():
            raise AnalyzerError("brain extraction found no brain in the T1c series")
        # Only the brain's bounding box (plus the model's receptive margin) goes through the sliding
        # window: a 1 mm field of view is ~40 % air and scalp, and windows are the analysis' main cost.
        box = bounding_box(brain, margin=8)
        probs = model.predict_volume(np.stack([c[box] for c in channels]).astype(np.float32), overlap=opts.overlap)
        lesion_prob = np.zeros(brain.shape, np.float32)
        lesion_prob[box] = 1.0 - probs[0]
        lesion_prob[~brain] = 0.0
        del probs
        timings["infer"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        sx, sy, sz = grid.GetSpacing()
        # The small-lesion detector (rule.small) reads the same z-scored T1c the model read.
        t1c_z = channels[list(manifest.inputs).index("t1c")] if "t1c" in manifest.inputs else None
        lesion_map, candidates = find_candidates(lesion_prob, brain, (sz, sy, sx), rule, image=t1c_z)
        confidences = {c.id: c.confidence for c in candidates}
        grid_map = sitk.GetImageFromArray(lesion_map.astype(np.uint16))
        grid_map.CopyInformation(grid)
        if opts.save_probabilities:
            p = sitk.GetImageFromArray(lesion_prob)
            p.CopyInformation(grid)
            sitk.WriteImage(p, str(workdir / "lesion_probability.nii.gz"))
            if t1c_z is not None:
                t = sitk.GetImageFromArray(np.asarray(t1c_z, dtype=np.float32))
                t.CopyInformation(grid)
                sitk.WriteImage(t, str(workdir / "t1c_model_input.nii.gz"))
        reference = sitk.ReadImage(str(pre.reference))
        native = sitk.GetArrayFromImage(sitk.Resample(grid_map, reference, sitk.Transform(), sitk.sitkNearestNeighbor, 0,
                                                       sitk.sitkUInt16)).astype(np.int32)
        native, confidences = renumber_by_size(native, confidences)  # a lesion too small for the native grid vanishes
        label_image = sitk.GetImageFromArray(native.astype(np.uint16))
        label_image.CopyInformation(reference)
        sitk.WriteImage(label_image, str(workdir / "labels.nii.gz"))
        timings["candidates"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        frame = brain_frame(sitk.ReadImage(str(pre.brain_mask)))
        timings["frame"] = time.perf_counter() - t0
        lesions = measure_lesions(label_image, confidences, frame)
        key = patient_key_of(inputs.series["t1c"].files[0]) or inputs.study_instance_uid
        tracks, comparison = compare(lesions, [], key, APPLICATION)
        measurements = result_rows(lesions, tracks, comparison)
        segments = metastasis_segments(len(lesions))
        flags = [] if lesions else ["no metastasis found"]
        extra_summary = {**summary(lesions, tracks, comparison), "frame_metric": round(frame.metric, 4),
                         "brain_volume_ml": round(pre.brain_volume_ml, 1)}
        log.info("metastases detected", job_id=inputs.job_id, count=len(lesions),
                 total_ml=extra_summary["total_volume_ml"], **{k: round(v, 2) for k, v in timings.items()})
        return AnalyzerResult(
            label_maps=[LabelMap(APPLICATION, native.astype(np.uint16), reference_role="t1c", segments=segments)],
            measurements=measurements,
            flags=flags,
            extra={
                "summary": extra_summary,
                "timings": timings,
                "labels_nifti": str(workdir / "labels.nii.gz"),
                "brain_mask_nifti": str(pre.brain_mask),
                "lesions": lesions,
                "tracking": tracks,
                "lesion_comparison": comparison,
                "response_criteria": "RANO-BM",
                "preprocessing_workdir": str(pre.workdir),
                "model": {"name": manifest.name, "version": manifest.version, "demo": manifest.demo},
            },
            model=model_info(manifest),
        )
