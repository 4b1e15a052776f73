"""Intracranial haemorrhage on non-contrast head CT: per-slice classification of the six labels,
a segmentation by subtype, study-level presence and volumes (radnode issue 16).

Pipeline: head-CT preprocessing (:mod:`.preprocessing`: tilt-corrected HU,
intracranial mask, the model grid — in-plane size from the manifest, the
source slices kept) → every slice with its neighbours in the manifest's
windows through the ONNX model (:mod:`.inference`) → per-slice
probabilities; study probability of a label = its highest slice probability,
present when it reaches the manifest's threshold → the segmentation, inside
the intracranial mask, keeps the present subtypes only → volumes on the model
grid and ABC/2 of the largest intraparenchymal haematoma (:mod:`.measure`) →
the label map mapped back onto the source pixels slice by slice
(``CTPreprocessResult.to_source``, right for gantry-tilted stacks too), which
is what the DICOM SEG references.

Every haemorrhage finding is critical (:class:`Finding` ``critical``): a
present one sends the results to the routing rule's ``notify`` destinations.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
import structlog
from pydantic import BaseModel, ConfigDict, Field

from radnode.analyzers.base import (
    AnalyzerError,
    AnalyzerInputs,
    AnalyzerResult,
    AnalyzerSpec,
    Finding,
    InputError,
    LabelMap,
    Measurement,
    ModelInfo,
    Progress,
    Segment,
)
from radnode.analyzers.hemorrhage.inference import (
    infer_slices,
    merge_minor_labels,
    read_inside,
    window_stack,
)
from radnode.analyzers.hemorrhage.measure import ABC2, abc2, label_volumes, largest_component
from radnode.analyzers.hemorrhage.preprocessing import WINDOWS, CTPreprocessResult, run_ct_preprocessing
from radnode.analyzers.hemorrhage.subtypes import ANY, DISPLAY, HEMORRHAGE_TYPE, LABELS, SUBTYPES, Output, layout_of
from radnode.analyzers.registry import HEMORRHAGE
from radnode.analyzers.model_backed import ModelBackedAnalyzer, model_info
from radnode.model.analysis import ImageRef, KeySlice, SliceCurves

log = structlog.get_logger(__name__)

ROLE = "ct_brain"
ROLES = HEMORRHAGE.required  # declared once, in the registry
VERSION = "0.1.0"
#: Fewer slices than this cannot cover a head (5 mm slices: 2.5 cm) nor give a slice its neighbours.
MIN_SLICES = 5

#: Measurement concepts (verified in DICOM's code dictionary: CID 7470 linear measurements).
LONG_AXIS = ("103339001", "SCT", "Long Axis")
PERPENDICULAR_AXIS = ("131189007", "SCT", "Perpendicular Axis")
HEIGHT = ("121207", "DCM", "Height")
#: No standard code names ABC/2; a local one, declared in the SR's coding scheme list.
ABC2_METHOD = ("ABC2", "99RADNODE", "ABC/2 (Kothari)")

PROBABILITY_DIGITS = 4
VOLUME_DIGITS = 3


class HemorrhageOptions(BaseModel):
    """Per-job options (routing YAML ``options:`` or the web form)."""

    model_config = ConfigDict(extra="forbid")

    #: A specific model by name (default: the newest model for application "hemorrhage").
    model: str | None = None
    #: Slices per ONNX Runtime call (memory against speed; the model may fix its own).
    batch_size: int = Field(default=8, ge=1, le=256)


def _p(value: float) -> float:
    return round(float(value), PROBABILITY_DIGITS)


def _ml(value: float) -> float:
    return round(float(value), VOLUME_DIGITS)


def _window_name(centre: float, width: float) -> str:
    for w in WINDOWS:
        if (w.centre, w.width) == (centre, width):
            return w.name
    return f"{centre:g}/{width:g}"


class HemorrhageAnalyzer(ModelBackedAnalyzer):
    """Implements the analyzer protocol for application ``hemorrhage``.

    Unlike glioma it is set up even when no hemorrhage model is installed (see
    :mod:`radnode.analyzers.model_backed`).
    """

    application = "hemorrhage"

    def describe(self, model: ModelInfo | None) -> AnalyzerSpec:
        return AnalyzerSpec(
            name="hemorrhage",
            version=VERSION,
            description="Intracranial haemorrhage on head CT: six labels per slice and study, segmentation and volumes by subtype",
            required_roles=ROLES,
            options=HemorrhageOptions,
            model=model,
            outputs=("seg", "sr", "pdf", "secondary_capture"),
        )

    def run(self, inputs: AnalyzerInputs, workdir: Path, progress: Progress) -> AnalyzerResult:
        opts = inputs.options
        assert isinstance(opts, HemorrhageOptions)
        timings: dict[str, float] = {}
        model = self.cache.get_model(self.model_ref_for(opts.model))  # fails fast (sha256, graph) before the preprocessing
        manifest = model.manifest
        layout = layout_of(manifest)
        ct = manifest.ct
        assert ct is not None  # layout_of checked it
        series = inputs.series.get(ROLE)
        if series is None:
            raise AnalyzerError(f"hemorrhage needs a {ROLE} series; got {sorted(inputs.series)}")

        progress("preprocessing")
        pre = run_ct_preprocessing(list(series.files), workdir / "preprocessing", in_plane_mm=ct.in_plane_mm,
                                   in_plane_size=ct.in_plane_size)
        timings.update({f"preprocess_{k}": v for k, v in pre.timings.items()})
        n = len(pre.geometry.slice_source)
        if n < MIN_SLICES:
            raise InputError(f"series {pre.geometry.series} has {n} slices; haemorrhage detection needs at least "
                             f"{MIN_SLICES} axial slices covering the head")
        grid = sitk.ReadImage(str(pre.ct_grid), sitk.sitkFloat32)
        mask = sitk.GetArrayFromImage(sitk.ReadImage(str(pre.mask_grid))) > 0

        progress("inferring")
        t0 = time.perf_counter()
        windows = window_stack(sitk.GetArrayViewFromImage(grid), ct.windows)
        soft_any = ct.any_probability == "soft-area"
        labels, probs, bleed_area = infer_slices(model, windows, batch_size=opts.batch_size,
                                                 inside=mask if soft_any else None)
        del windows
        if ct.slice_probability == "masked-segmentation":
            outputs: list[int | None] = [None] * len(ct.slice_outputs)
            for o in layout.values():
                outputs[o.slice_index] = o.value
            labels, probs = read_inside(labels, mask, ct.merge_minor_labels, outputs,
                                        any_area=bleed_area,
                                        neighbour_share=ct.neighbour_share)
        elif ct.merge_minor_labels:
            labels = merge_minor_labels(labels, ct.merge_minor_labels)
        timings["infer"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        result = _assemble(pre, grid, mask, labels, probs, layout, workdir, ct.context_slices,
                           ct.min_subtype_volume_ml)
        timings["postprocess"] = time.perf_counter() - t0
        result.extra["timings"] = timings
        result.extra["model"] = {"name": manifest.name, "version": manifest.version, "demo": manifest.demo}
        result.model = model_info(manifest)
        summary = result.extra["summary"]
        log.info("hemorrhage analysed", job_id=inputs.job_id, slices=n, any_present=summary["any"]["present"],
                 present=[s for s, v in summary["subtypes"].items() if v["present"]], volume_ml=summary["volume_ml"],
                 **{k: round(v, 2) for k, v in timings.items()})
        return result


def _assemble(pre: CTPreprocessResult, grid: sitk.Image, mask: np.ndarray, labels: np.ndarray, probs: np.ndarray,
              layout: dict[str, Output], workdir: Path, context: int, min_volume_ml: float = 0.0) -> AnalyzerResult:
    """From the model's raw answer to findings, measurements, the source label map and the report data."""
    geometry = pre.geometry
    sx, sy, sz = grid.GetSpacing()
    spacing = (sz, sy, sx)
    study = {name: _p(probs[:, o.slice_index].max()) for name, o in layout.items()}
    present = {name: study[name] >= o.threshold for name, o in layout.items()}
    # One answer per study: no subtype is reported present when "any" is not (a subtype's own
    # threshold can be lower than "any"'s, and the report must not say "no haemorrhage" beside one).
    if not present[ANY]:
        present = {name: False for name in present}

    # The segmentation inside the intracranial mask, present subtypes only.
    value_of = {s: int(layout[s].value) for s in SUBTYPES}  # type: ignore[arg-type]  # layout_of: subtypes have one
    keep = np.zeros(256, dtype=bool)
    for name in SUBTYPES:
        keep[value_of[name]] = present[name]
    labels = np.where(mask & keep[labels], labels, 0).astype(np.uint8)
    counted = label_volumes(labels, list(value_of.values()), spacing)
    # The model's reporting volume (manifest min_subtype_volume_ml): a subtype whose segment stays
    # under it is not reported, and its voxels leave the label map; "any" keeps its own answer.
    small = [s for s in SUBTYPES if present[s] and counted[value_of[s]] < min_volume_ml]
    if small:
        for name in small:
            present[name] = False
            keep[value_of[name]] = False
        labels = np.where(keep[labels], labels, 0).astype(np.uint8)
    volumes = {s: counted[value_of[s]] if present[s] else 0.0 for s in SUBTYPES}
    total = sum(volumes.values())
    iph = layout["intraparenchymal"]
    estimate = abc2(largest_component(labels == iph.value), spacing) if present["intraparenchymal"] else None

    label_image = sitk.GetImageFromArray(labels)
    label_image.CopyInformation(grid)
    labels_path = workdir / "labels.nii.gz"
    sitk.WriteImage(label_image, str(labels_path), useCompression=True)
    source_labels = pre.to_source(label_image).astype(np.uint8)
    source_files = tuple(dict.fromkeys(Path(s.file) for s in geometry.sources))

    segments = tuple(
        Segment(value=value_of[s], name=DISPLAY[s], property_type=layout[s].snomed or HEMORRHAGE_TYPE)
        for s in SUBTYPES if present[s] and np.any(source_labels == value_of[s])
    )
    flags = []
    if present[ANY] and not any(present[s] for s in SUBTYPES):
        flags.append("haemorrhage present but no subtype reaches its threshold")
    if any(present[s] for s in SUBTYPES) and not present[ANY]:
        flags.append("a subtype is present but 'any' is below its threshold")
    for s in SUBTYPES:
        if present[s] and volumes[s] == 0.0:
            flags.append(f"{DISPLAY[s].lower()} present by the slice classifier but not segmented")
    for s in small:
        flags.append(f"{DISPLAY[s].lower()} reached its threshold but its segment ({counted[value_of[s]]:.2f} mL) "
                     f"is under the model's reporting volume of {min_volume_ml:g} mL: not reported")

    slices, evidence = _slices(pre, probs, layout)
    findings = [
        Finding(
            name=o.display,
            present=present[name],
            probability=study[name],
            detail=_detail(pre, probs[:, o.slice_index], o, len(evidence[name])),
            critical=True,
            code=o.finding_code,
            evidence=evidence[name],
        )
        for name, o in layout.items()
    ]
    measurements = [Measurement(f"{s}_volume", _ml(volumes[s]), "mL", segment=DISPLAY[s]) for s in SUBTYPES if present[s]]
    measurements.append(Measurement("hemorrhage_volume", _ml(total), "mL", segment=DISPLAY[ANY]))
    if estimate is not None:
        where = DISPLAY["intraparenchymal"]
        measurements += [
            Measurement("abc2_volume", _ml(estimate.volume_ml), "mL", segment=where, method=ABC2_METHOD),
            Measurement("abc2_a", round(estimate.a_mm, 1), "mm", code=LONG_AXIS, segment=where, method=ABC2_METHOD),
            Measurement("abc2_b", round(estimate.b_mm, 1), "mm", code=PERPENDICULAR_AXIS, segment=where, method=ABC2_METHOD),
            Measurement("abc2_c", round(estimate.c_mm, 1), "mm", code=HEIGHT, segment=where, method=ABC2_METHOD),
        ]

    summary: dict[str, Any] = {
        "application": "hemorrhage",
        ANY: {"present": present[ANY], "probability": study[ANY]},
        "subtypes": {s: {"present": present[s], "probability": study[s], "volume_ml": _ml(volumes[s])} for s in SUBTYPES},
        "volume_ml": _ml(total),
        "abc2": _abc2_summary(estimate, pre),
        "slices": slices,
    }
    dz_source = _source_spacing(pre)
    return AnalyzerResult(
        label_maps=[LabelMap("hemorrhage", source_labels, reference_role=ROLE, segments=segments, source_files=source_files)],
        measurements=measurements,
        findings=findings,
        flags=flags,
        extra={
            "summary": summary,
            "labels_nifti": str(labels_path),
            "intracranial_mask_nifti": str(pre.mask_grid),
            "intracranial_volume_ml": pre.intracranial_volume_ml,
            "preprocessing_workdir": str(pre.workdir),
            # The same volumes counted on the source pixels (a cross-check of the mapping back).
            "volumes_source_ml": {s.name: _ml(np.count_nonzero(source_labels == s.value) * dz_source
                                              * geometry.pixel_spacing[0] * geometry.pixel_spacing[1] / 1000.0)
                                  for s in segments},
            "key_slices": _key_slices(pre, probs, layout, present, source_labels, segments),
            "slice_curves": SliceCurves(
                names=tuple(DISPLAY[name] for name in LABELS),
                values=tuple(tuple(float(probs[m, layout[name].slice_index]) for name in LABELS) for m in range(len(probs))),
                thresholds=tuple(layout[name].threshold for name in LABELS),
                title="Per-slice probability (slice 1 = most inferior)",
            ),
            "key_image_heading": "Key slices (brain, subdural and bone windows; haemorrhage outlined)",
            "method_steps": _method_steps(pre, layout, context, min_volume_ml),
        },
    )


def _slices(pre: CTPreprocessResult, probs: np.ndarray,
            layout: dict[str, Output]) -> tuple[list[dict[str, Any]], dict[str, tuple[ImageRef, ...]]]:
    """Per-slice JSON rows, and per label the source images whose slice probability reaches its threshold."""
    rows = []
    evidence: dict[str, dict[ImageRef, None]] = {name: {} for name in layout}
    for m in range(len(probs)):
        src = pre.slice_source(m)
        row: dict[str, Any] = {
            "sop_instance_uid": src.sop_instance_uid,
            "instance_number": src.instance_number,
            "probabilities": {name: _p(probs[m, o.slice_index]) for name, o in layout.items()},
        }
        if src.frame_number is not None:
            row["frame_number"] = src.frame_number
        rows.append(row)
        for name, o in layout.items():
            if row["probabilities"][name] >= o.threshold:
                evidence[name][ImageRef(src.sop_instance_uid, src.frame_number)] = None
    return rows, {name: tuple(refs) for name, refs in evidence.items()}


def _detail(pre: CTPreprocessResult, column: np.ndarray, o: Output, n_evidence: int) -> str:
    m = int(np.argmax(column))
    src = pre.slice_source(m)
    where = f"instance {src.instance_number}" if src.instance_number is not None else f"slice {m + 1}"
    return (f"highest on {where} (slice {m + 1} of {len(column)}); threshold {o.threshold:.2f}; "
            f"{n_evidence} image(s) at or above it")


def _key_slices(pre: CTPreprocessResult, probs: np.ndarray, layout: dict[str, Output], present: dict[str, bool],
                source_labels: np.ndarray, segments: tuple[Segment, ...]) -> list[KeySlice]:
    """Per present, segmented subtype: the slice of its highest probability (where its segment shows)."""
    windows = tuple((w.name, w.centre, w.width) for w in WINDOWS)
    out = []
    for s in SUBTYPES:
        o = layout[s]
        if not present[s] or not any(seg.value == o.value for seg in segments):
            continue
        m = int(np.argmax(probs[:, o.slice_index]))
        k = pre.geometry.slice_source[m]
        if not np.any(source_labels[k] == o.value):  # the classifier's peak shows no segment: the largest section
            k = int(np.argmax((source_labels == o.value).reshape(len(source_labels), -1).sum(axis=1)))
        src = pre.geometry.sources[k]
        title = (f"{o.display}: source slice {k + 1} of {len(source_labels)}"
                 + (f" (instance {src.instance_number})" if src.instance_number is not None else "")
                 + f", p = {probs[m, o.slice_index]:.2f}")
        out.append(KeySlice(title=title, index=k, segment=o.display, windows=windows))
    return out


def _abc2_summary(estimate: ABC2 | None, pre: CTPreprocessResult) -> dict[str, Any] | None:
    if estimate is None:
        return None
    src = pre.slice_source(estimate.slice_index)
    return {
        "subtype": "intraparenchymal",
        "volume_ml": _ml(estimate.volume_ml),
        "a_mm": round(estimate.a_mm, 1),
        "b_mm": round(estimate.b_mm, 1),
        "c_mm": round(estimate.c_mm, 1),
        "slice_sop_instance_uid": src.sop_instance_uid,
        "slices_counted": sum(estimate.slice_weights.values()),
    }


def _source_spacing(pre: CTPreprocessResult) -> float:
    """Spacing (mm) between the source slices along their normal (median)."""
    g = pre.geometry
    pos = sorted(float(np.dot(s.position, g.normal)) for s in g.sources)
    return float(np.median(np.diff(pos))) if len(pos) > 1 else 0.0


def _method_steps(pre: CTPreprocessResult, layout: dict[str, Output], context: int,
                  min_volume_ml: float = 0.0) -> list[str]:
    tilt = pre.geometry.tilt_deg
    return [
        "Series selection by DICOM header rules and the series classifier (non-contrast head CT).",
        "Hounsfield units from the stored values; gantry tilt corrected"
        + (f" (measured {tilt:.1f} degrees)" if tilt > 0.5 else "")
        + "; intracranial space from HU (inside the skull's inner table); the slices resampled in-plane to the "
          "model grid, each slice kept.",
        f"Per-slice classification of six labels and segmentation by subtype by the model named below, each slice "
        f"with {context} neighbouring slice(s) on each side, in the brain 40/80, subdural 80/200 and bone 600/2800 "
        "windows.",
        "Study level: a label's probability is its highest slice probability; present when it reaches the model's "
        "threshold (" + ", ".join(f"{name} {o.threshold:.2f}" for name, o in layout.items()) + ")"
        + (f"; a subtype whose segment is under {min_volume_ml:g} mL is not reported." if min_volume_ml else "."),
        "Volumes: voxels of each present subtype inside the intracranial mask on the model grid. ABC/2 (Kothari 1996): "
        "largest intraparenchymal haematoma; A longest diameter on its largest slice, B longest perpendicular, "
        "C slices counted 1 (>= 75 % of the largest area) or 0.5 (25-75 %) times the slice spacing.",
    ]
