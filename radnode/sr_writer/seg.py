"""DICOM Segmentation (PS3.3 A.51 Segmentation IOD) from a radnode label map.

Array convention (the one thing every caller must get right): a label map is
``(Z, Y, X)`` where ``Z`` runs over the reference series' instances **sorted
by position along the slice normal, ascending** (see :func:`sort_sources`),
``Y`` over rows and ``X`` over columns of those instances. This is the order
in which frame ``k`` of the SEG references source instance ``k``; it does not
depend on file names, Instance Numbers or the order the PACS sent them.
:func:`label_map_for_sources` converts a SimpleITK label image on the
series' grid (whatever its direction matrix) into that order.

SEG type: BINARY by default — LABELMAP (highdicom ≥ 0.23, Sup 243) is more
compact but many deployed viewers only read BINARY.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import SimpleITK as sitk
import structlog
from pydicom.dataset import Dataset
from pydicom.sr.coding import Code

from radnode.model.analysis import Segment
from radnode.sr_writer.frames import source_frames
from radnode.sr_writer.provenance import OutputProvenance

log = structlog.get_logger(__name__)

#: Tolerance (mm) for "this position is that source slice".
_POS_TOL = 1e-3


def _geometry(ds: Dataset) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(position, row direction, column direction, normal) of one single-frame instance."""
    iop = np.asarray([float(v) for v in ds.ImageOrientationPatient], dtype=float)
    ipp = np.asarray([float(v) for v in ds.ImagePositionPatient], dtype=float)
    row, col = iop[:3], iop[3:]
    return ipp, row, col, np.cross(row, col)


def sort_sources(source_images: Sequence[Dataset]) -> list[Dataset]:
    """Sort one series' single-frame instances by position along the normal.

    Validates that they form one regular stack (same series, frame of
    reference, orientation and matrix; distinct positions): a SEG frame can
    only reference a source slice unambiguously when they do. One
    multi-frame object (Enhanced or Legacy Converted Enhanced MR/CT) is
    validated the same way, frame by frame, and returned as ``[object]``;
    :func:`radnode.sr_writer.frames.source_frames` gives its slices.
    """
    frames = source_frames(source_images)
    if frames[0].frame_number is not None:
        return [frames[0].dataset]
    return [f.dataset for f in frames]


def label_map_for_sources(label_image: sitk.Image, source_images: Sequence[Dataset]) -> np.ndarray:
    """Return *label_image*'s voxels as ``(Z, Y, X)`` in sorted-source order.

    *label_image* must lie on the series' own voxel grid (an analyzer that
    resampled must resample back first); its direction matrix may differ by
    axis permutation and flips (e.g. an LPS-reoriented image). Every source
    voxel centre is required to land exactly on a label voxel centre, so a
    wrong grid fails loudly instead of shifting the segmentation.
    """
    if not isinstance(label_image, sitk.Image):
        raise TypeError(f"label_image: expected SimpleITK.Image, got {type(label_image).__name__}")
    if label_image.GetDimension() != 3:
        raise ValueError("label_image: must be 3-D")
    if label_image.GetNumberOfComponentsPerPixel() != 1:
        raise ValueError("label_image: must be a scalar image")
    frames = source_frames(source_images)
    first = frames[0].dataset
    rows, cols = int(first.Rows), int(first.Columns)
    ipp0, row_dir, col_dir = frames[0].position, frames[0].row, frames[0].col
    dr, dc = frames[0].spacing  # row spacing, column spacing

    def to_index(point: np.ndarray) -> np.ndarray:
        return np.asarray(label_image.TransformPhysicalPointToContinuousIndex(tuple(float(v) for v in point)))

    origin_idx = to_index(ipp0)
    step_c = to_index(ipp0 + row_dir * dc) - origin_idx  # one column to the right
    step_r = to_index(ipp0 + col_dir * dr) - origin_idx  # one row down
    if len(frames) > 1:
        step_s = to_index(frames[1].position) - origin_idx
    else:
        spare = {0, 1, 2} - {int(np.argmax(np.abs(step_c))), int(np.argmax(np.abs(step_r)))}
        step_s = np.zeros(3)
        step_s[spare.pop()] = 1.0
    steps = np.stack([step_s, step_r, step_c])  # rows: output axis (s, r, c); cols: sitk axis (i, j, k)
    rounded = np.round(steps)
    if not np.allclose(steps, rounded, atol=1e-3) or sorted(np.abs(rounded).sum(axis=1)) != [1, 1, 1]:
        raise ValueError("label_image: not on the source series' voxel grid (axes do not align)")
    perm = [int(np.argmax(np.abs(rounded[o]))) for o in range(3)]  # sitk axis of each output axis
    if sorted(perm) != [0, 1, 2]:
        raise ValueError("label_image: not on the source series' voxel grid (axes do not align)")
    size = label_image.GetSize()  # (i, j, k)
    expected = (len(frames), rows, cols)
    if tuple(size[perm[o]] for o in range(3)) != expected:
        raise ValueError(f"label_image: size {size} does not match the {expected} source grid")
    if not np.allclose(origin_idx, np.round(origin_idx), atol=1e-3):
        raise ValueError("label_image: source voxel centres fall between label voxels")
    arr = sitk.GetArrayFromImage(label_image)  # numpy axes (k, j, i) = sitk axes (2, 1, 0)
    out = np.transpose(arr, [2 - perm[o] for o in range(3)])
    for o in range(3):
        if rounded[o, perm[o]] < 0:
            out = np.flip(out, axis=o)
    # Every slice must sit where the grid says (catches irregular spacing).
    for s, frame in enumerate(frames):
        idx = to_index(frame.position)
        expect = origin_idx + s * step_s
        if not np.allclose(idx, expect, atol=1e-2):
            raise ValueError(f"label_image: source slice {s} is not on the label image's slice grid")
    corner = np.round(origin_idx).astype(int)
    for o in range(3):
        a = perm[o]
        want = 0 if rounded[o, a] > 0 else size[a] - 1
        if corner[a] != want:
            raise ValueError("label_image: does not cover exactly the source series' extent")
    return np.ascontiguousarray(out)


def _coded(value: tuple[str, str] | None, default: Code) -> hd.sr.CodedConcept:
    if value is None:
        return hd.sr.CodedConcept.from_code(default)
    return hd.sr.CodedConcept(value=value[0], scheme_designator="SCT", meaning=value[1])


def check_segments(segments: Sequence[Segment], argument: str = "segments") -> tuple[Segment, ...]:
    """Validate segments: non-empty, Segment items, unique positive values and names."""
    if isinstance(segments, (str, bytes)) or not isinstance(segments, Sequence):
        raise TypeError(f"{argument}: expected a sequence of Segment")
    if len(segments) == 0:
        raise ValueError(f"{argument}: must not be empty")
    seen_v: set[int] = set()
    seen_n: set[str] = set()
    for i, s in enumerate(segments):
        if not isinstance(s, Segment):
            raise TypeError(f"{argument}: item {i} is {type(s).__name__}, not Segment")
        if not isinstance(s.value, (int, np.integer)) or isinstance(s.value, bool) or s.value < 1:
            raise ValueError(f"{argument}: item {i} value must be a positive int")
        if not s.name or not s.name.strip():
            raise ValueError(f"{argument}: item {i} has an empty name")
        if s.value in seen_v or s.name in seen_n:
            raise ValueError(f"{argument}: duplicate value or name in item {i} ({s.name!r})")
        seen_v.add(int(s.value))
        seen_n.add(s.name)
    return tuple(segments)


def segment_numbers(segments: Sequence[Segment]) -> dict[str, int]:
    """SEG segment number of each segment name (1.. in the order given)."""
    return {s.name: i + 1 for i, s in enumerate(segments)}


def build_segmentation(
    source_images: Sequence[Dataset],
    label_map: np.ndarray,
    segments: Sequence[Segment],
    provenance: OutputProvenance,
    *,
    segmentation_type: str = "BINARY",
    tracking: Mapping[str, tuple[str, str]] | None = None,
) -> hd.seg.Segmentation:
    """Build the SEG for *label_map* (``(Z, Y, X)``, sorted-source order).

    Segment *n* (1-based, in the order of *segments*) holds the voxels whose
    label equals ``segments[n-1].value``; label values need not be
    contiguous (BraTS uses 1, 2, 4). Empty frames are omitted. The SEG is a
    new series in the sources' study, with UIDs derived from the job id.
    *tracking* maps a segment name to (Tracking ID, Tracking UID) where the
    segment is a tracked lesion (the same UID as its SR group and as the
    lesion in the patient's other exams); others get job-derived ones.
    """
    if not isinstance(provenance, OutputProvenance):
        raise TypeError(f"provenance: expected OutputProvenance, got {type(provenance).__name__}")
    frames = source_frames(source_images)
    ordered = sort_sources(source_images)
    segs = check_segments(segments)
    if not isinstance(label_map, np.ndarray):
        raise TypeError(f"label_map: expected numpy.ndarray, got {type(label_map).__name__}")
    if label_map.dtype.kind not in "iub":
        raise TypeError(f"label_map: must have an integer dtype, got {label_map.dtype}")
    expected = (len(frames), int(ordered[0].Rows), int(ordered[0].Columns))
    if label_map.shape != expected:
        raise ValueError(f"label_map: shape {label_map.shape} does not match the source series {expected} (Z, Y, X)")
    values = {s.value for s in segs}
    present = set(np.unique(label_map).tolist()) - {0}
    unknown = present - values
    if unknown:
        raise ValueError(f"label_map: contains values {sorted(unknown)} not described in segments")
    if not present:
        raise ValueError("label_map: is empty (no labelled voxel); write no SEG for an empty result")
    if not isinstance(segmentation_type, str) or segmentation_type.upper() not in ("BINARY", "LABELMAP"):
        raise ValueError("segmentation_type: must be 'BINARY' or 'LABELMAP'")
    seg_type = hd.seg.SegmentationTypeValues(segmentation_type.upper())

    # Relabel to SEG segment numbers 1..N (highdicom reads a label array's
    # values as segment numbers).
    lut = np.zeros(int(max(values)) + 1, dtype=np.uint16)
    for number, s in enumerate(segs, start=1):
        lut[s.value] = number
    pixels = lut[label_map.astype(np.int64)]
    if frames[0].frame_number is not None:
        # One multi-frame source: highdicom pairs SEG frame i with source
        # frame i (Referenced Frame Number i + 1), so go from sorted-position
        # order back to the source's own frame order.
        in_frame_order = np.zeros((len(frames), *pixels.shape[1:]), dtype=pixels.dtype)
        for k, frame in enumerate(frames):
            in_frame_order[int(frame.frame_number) - 1] = pixels[k]  # type: ignore[arg-type]
        pixels = in_frame_order

    algorithm = provenance.algorithm_identification()
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=s.name[:64],
            segmented_property_category=_coded(s.property_category, Code("49755003", "SCT", "Morphologically Altered Structure")),
            segmented_property_type=_coded(s.property_type, Code("108369006", "SCT", "Neoplasm")),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
            tracking_uid=(tracking or {}).get(s.name, ("", provenance.uid("segment", s.name)))[1],
            tracking_id=(tracking or {}).get(s.name, (s.name, ""))[0][:64],
        )
        for number, s in enumerate(segs, start=1)
    ]
    spec = provenance.series("seg")
    seg = hd.seg.Segmentation(
        source_images=ordered,
        pixel_array=pixels.astype(np.uint8 if len(segs) < 256 else np.uint16),
        segmentation_type=seg_type,
        segment_descriptions=descriptions,
        series_instance_uid=provenance.series_uid("seg"),
        series_number=spec.number,
        sop_instance_uid=provenance.instance_uid("seg"),
        instance_number=1,
        manufacturer=provenance.manufacturer,
        manufacturer_model_name=provenance.manufacturer_model_name,
        software_versions=provenance.software_versions,
        device_serial_number=provenance.device_serial_number,
        content_description=spec.description,
        content_label="AI_SEG",
        content_creator_name=None,
        omit_empty_frames=True,
        contributing_equipment=[provenance.contributing_equipment()],
        series_description=spec.description,
    )
    log.info("seg built", job_id=provenance.job_id, segments=len(segs), frames=int(seg.NumberOfFrames), type=seg_type.value)
    return seg


def segmentation_to_label_map(
    seg: str | Path | Dataset,
    source_images: Sequence[Dataset],
    segments: Sequence[Segment] | None = None,
) -> np.ndarray:
    """Read a SEG back into a ``(Z, Y, X)`` label map in sorted-source order.

    Frames are matched to sources by the Referenced SOP Instance UID and
    their plane positions are checked against the sources' positions (so a
    frame that references the right instance but sits elsewhere in patient
    space is an error, not a silent shift). With *segments*, segment numbers
    are mapped back to the original label values by segment label.
    """
    if isinstance(seg, (str, Path)):
        obj = hd.seg.segread(seg)
    elif isinstance(seg, hd.seg.Segmentation):
        obj = seg
    elif isinstance(seg, Dataset):
        obj = hd.seg.Segmentation.from_dataset(seg, copy=True)
    else:
        raise TypeError(f"seg: expected a path or Dataset, got {type(seg).__name__}")
    frames = source_frames(source_images)
    # A LABELMAP SEG describes background as segment 0; it holds no label.
    numbers = [int(d.SegmentNumber) for d in obj.SegmentSequence if int(d.SegmentNumber) > 0]
    # Plane positions of the stored frames must equal their sources' positions.
    by_ref = {(f.sop_instance_uid, f.frame_number): f.position for f in frames}
    for i, frame in enumerate(obj.PerFrameFunctionalGroupsSequence, start=1):
        src = frame.DerivationImageSequence[0].SourceImageSequence[0]
        number = int(src.ReferencedFrameNumber) if frames[0].frame_number is not None and "ReferencedFrameNumber" in src else None
        key = (str(src.ReferencedSOPInstanceUID), number)
        pos = np.asarray([float(v) for v in frame.PlanePositionSequence[0].ImagePositionPatient])
        if key not in by_ref or not np.allclose(pos, by_ref[key], atol=_POS_TOL):
            raise ValueError(f"seg: frame {i} does not sit on its source instance's position")
    if frames[0].frame_number is not None:
        pixels = obj.get_pixels_by_source_frame(
            source_sop_instance_uid=frames[0].sop_instance_uid,
            source_frame_numbers=[int(f.frame_number) for f in frames],  # type: ignore[arg-type]
            segment_numbers=numbers,
            combine_segments=True,
            relabel=False,
            # Empty frames are omitted from the SEG; the frame numbers asked
            # for come from the source object itself, so they are valid.
            assert_missing_frames_are_empty=True,
        )
    else:
        pixels = obj.get_pixels_by_source_instance(
            source_sop_instance_uids=[f.sop_instance_uid for f in frames],
            segment_numbers=numbers,
            combine_segments=True,
            relabel=False,
        )
    out = np.asarray(pixels, dtype=np.int32)
    if segments is not None:
        segs = check_segments(segments)
        label_by_number = {int(d.SegmentNumber): str(d.SegmentLabel) for d in obj.SegmentSequence if int(d.SegmentNumber) > 0}
        value_by_name = {s.name[:64]: int(s.value) for s in segs}
        lut = np.zeros(max(numbers) + 1, dtype=np.int32)
        for number, label in label_by_number.items():
            if label not in value_by_name:
                raise ValueError(f"segments: SEG segment {number} ({label!r}) is not described")
            lut[number] = value_by_name[label]
        out = lut[out]
    return out


def read_sources(paths: Sequence[str | Path]) -> list[Dataset]:
    """Read a series' files fully (pixels included) and sort them."""
    return sort_sources([pydicom.dcmread(p) for p in paths])
