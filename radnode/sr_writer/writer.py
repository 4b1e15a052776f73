"""Write all result objects of one job: SEG, SR, PDF, Encapsulated PDF, SC.

The worker calls :func:`write_results` once per finished analysis. Every
object is written into *out_dir* under a fixed name and read back (strict
pydicom validation) before the function returns, so an object the PACS
would reject fails the job here, with the job's logs, not in the PACS.
UIDs derive from the job id: a retried job rewrites identical UIDs.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pydicom
import structlog
from pydicom.dataset import Dataset

from radnode.model.analysis import AnalyzerResult, KeySlice, LabelMap, Measurement, ModelInfo, Segment, SliceCurves
from radnode.model.branding import ReportBranding
from radnode.model.lesion_rows import METASTASIS_CATEGORY, METASTASIS_TYPE
from radnode.sr_writer.encapsulated_pdf import build_encapsulated_pdf
from radnode.sr_writer.frames import frames_image, slice_spacing, sorted_volume, source_frames, with_top_level_geometry
from radnode.sr_writer.hemorrhage_figures import render_slice_figures
from radnode.sr_writer.lesion_thumbnails import render_lesion_thumbnails, thumbnail_file
from radnode.sr_writer.pdf import KeyImage, PriorResult, build_report_pdf, render_key_images
from radnode.sr_writer.patient import apply_patient_module
from radnode.sr_writer.provenance import OutputProvenance
from radnode.sr_writer.rano_figures import render_bidimensional
from radnode.sr_writer.secondary_capture import build_secondary_captures, key_image_inputs, pdftoppm_available, render_pdf_pages
from radnode.sr_writer.seg import build_segmentation, sort_sources
from radnode.sr_writer.sr import build_measurement_report
from radnode.sr_writer.validate import dciodvfy, read_back

log = structlog.get_logger(__name__)

DEFAULT_METHOD_STEPS = (
    "Series selection by DICOM header rules and the series classifier.",
    "Pre-processing of the selected series (resampling, intensity normalisation).",
    "Automatic segmentation / detection by the model named below.",
    "Measurements computed from the label map on the reference series grid.",
)


#: Lesions whose RANO measurement gets its own key image (largest first).
MAX_RANO_IMAGES = 3


class ResultWriteError(RuntimeError):
    """An output object could not be built, written, read back or validated."""


@contextmanager
def _step(what: str) -> Iterator[None]:
    """Turn any failure while building *what* into a :class:`ResultWriteError` naming it.

    Why: a writer failure must fail the job with a reason a user can act on
    ("SEG: source_images: ..."), never escape as an unhandled library error.
    """
    try:
        yield
    except ResultWriteError:
        raise
    except Exception as exc:  # noqa: BLE001 - re-raised with the object named
        raise ResultWriteError(f"{what}: {type(exc).__name__}: {exc}") from exc


@dataclass
class WrittenObjects:
    """Where the objects went, and the SOP Instance UID of each file."""

    paths: dict[str, Path | list[Path] | None] = field(default_factory=dict)
    sop_instance_uids: dict[Path, str] = field(default_factory=dict)

    def dicom_files(self) -> list[Path]:
        """Every DICOM file written (what is sent back to the PACS)."""
        return [p for p in self.sop_instance_uids]

    def series_instance_uids(self) -> list[str]:
        """The new series radnode created (to confirm them on the destination)."""
        uids = []
        for path in self.sop_instance_uids:
            uid = str(pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SeriesInstanceUID"]).SeriesInstanceUID)
            if uid not in uids:
                uids.append(uid)
        return uids


def _read_series(paths: Sequence[Path]) -> list[Dataset]:
    return sort_sources([pydicom.dcmread(p) for p in paths])


def _series_from_study_dir(study_dir: Path) -> dict[str, list[Path]]:
    """Group a study folder's image files by Series Instance UID."""
    groups: dict[str, list[Path]] = {}
    for p in sorted(study_dir.rglob("*")):
        if not p.is_file():
            continue
        try:
            ds = pydicom.dcmread(p, stop_before_pixels=True)
        except Exception:  # noqa: BLE001 - non-DICOM files are skipped
            continue
        if "ImagePositionPatient" in ds and "SeriesInstanceUID" in ds:
            groups.setdefault(str(ds.SeriesInstanceUID), []).append(p)
    return groups


def voxel_spacing(sources: Sequence[Dataset]) -> tuple[float, float, float]:
    """(slice, row, column) spacing in mm of a sorted series (classic or one multi-frame object).

    The slice spacing is measured between positions along the normal, not
    read from Slice Thickness, which differs from it for gapped stacks.
    """
    return slice_spacing(source_frames(sources))


def segment_volumes(label_map: LabelMap, sources: Sequence[Dataset]) -> list[Measurement]:
    """Volume (mL) of every segment: voxel count × voxel volume.

    Voxel volume = pixel spacing × spacing between slice *positions* (not
    Slice Thickness, which can differ from the spacing for gapped stacks).
    """
    dz, dr, dc = voxel_spacing(sources)
    voxel_ml = dr * dc * dz / 1000.0
    return [
        Measurement(f"{s.name} volume", round(float(np.count_nonzero(label_map.array == s.value)) * voxel_ml, 3), "mL", segment=s.name)
        for s in label_map.segments
    ]


def _slice_figures(result: AnalyzerResult) -> tuple[list[KeySlice], SliceCurves | None]:
    """The key slices and the per-slice curves a slice-based analyzer asks for (``extra``), type-checked."""
    keys = list(result.extra.get("key_slices") or ())
    for i, k in enumerate(keys):
        if not isinstance(k, KeySlice):
            raise TypeError(f"result: extra['key_slices'] item {i} is {type(k).__name__}, not KeySlice")
    curves = result.extra.get("slice_curves")
    if curves is not None and not isinstance(curves, SliceCurves):
        raise TypeError(f"result: extra['slice_curves'] is {type(curves).__name__}, not SliceCurves")
    return keys, curves


def _metastasis_segments(segments: Sequence[Segment]) -> tuple[Segment, ...]:
    """Lesion segments without a type of their own are metastases (not glioma's default "Neoplasm")."""
    return tuple(s if s.property_type is not None else replace(s, property_type=METASTASIS_TYPE, property_category=METASTASIS_CATEGORY)
                 for s in segments)


def write_results(
    *,
    job_id: str,
    result: AnalyzerResult,
    model: ModelInfo,
    out_dir: Path,
    application: str,
    source_series: Mapping[str, Sequence[Path]] | None = None,
    study_dir: Path | None = None,
    branding: ReportBranding | None = None,
    prior_results: Sequence[PriorResult] = (),
    series: Mapping[str, tuple[int, str]] | None = None,
    device_serial_number: str = "radnode-0001",
    institution_name: str | None = None,
    segmentation_type: str = "BINARY",
    method_steps: Sequence[str] = DEFAULT_METHOD_STEPS,
    trend_keys: Sequence[str] | None = None,
    render_pages: bool = True,
    check_iod: bool = False,
) -> WrittenObjects:
    """Build, write and read back every result object of one job.

    Files: ``seg.dcm`` (absent without a label map), ``sr.dcm``,
    ``report.pdf``, ``report_pdf.dcm``, ``sc_001.dcm``… (key images, then one
    per report page when poppler's ``pdftoppm`` is installed and
    *render_pages*). With *check_iod*, dciodvfy errors raise too.

    A metastasis result (``extra["response_criteria"] == "RANO-BM"``) is
    written lesion by lesion: ``extra["lesions"]``, ``extra["tracking"]``
    and ``extra["lesion_comparison"]`` feed the SR, the PDF and the SEG's
    tracking, and each lesion gets a thumbnail, ``lesion_<k>.png`` in
    *out_dir* (for the web page; ``paths["lesion_thumbnails"]``), which is
    also shown in the PDF and sent as a secondary capture.
    """
    if not isinstance(job_id, str) or not job_id.strip():
        raise ValueError("job_id: must be a non-empty string")
    if not isinstance(result, AnalyzerResult):
        raise TypeError(f"result: expected AnalyzerResult, got {type(result).__name__}")
    if not isinstance(model, ModelInfo):
        raise TypeError(f"model: expected ModelInfo, got {type(model).__name__}")
    if not isinstance(out_dir, Path):
        raise TypeError(f"out_dir: expected pathlib.Path, got {type(out_dir).__name__}")
    if (source_series is None) == (study_dir is None):
        raise ValueError("source_series: give exactly one of source_series and study_dir")
    branding = branding if branding is not None else ReportBranding()
    if not isinstance(branding, ReportBranding):
        raise TypeError(f"branding: expected ReportBranding, got {type(branding).__name__}")
    if len(result.label_maps) > 1:
        raise ValueError("result: more than one label map is not supported by the writers yet")

    if study_dir is not None:
        if not Path(study_dir).is_dir():
            raise ValueError(f"study_dir: {study_dir} is not a folder")
        groups = _series_from_study_dir(Path(study_dir))
        if len(groups) != 1:
            raise ValueError(f"study_dir: holds {len(groups)} image series; pass source_series by role instead")
        only = next(iter(groups.values()))
        roles = {lm.reference_role for lm in result.label_maps} or {"reference"}
        source_series = {role: only for role in roles}
    assert source_series is not None
    if not isinstance(source_series, Mapping) or not source_series:
        raise ValueError("source_series: must map role to a non-empty list of files")

    label_map = result.label_maps[0] if result.label_maps else None
    role = label_map.reference_role if label_map is not None else next(iter(source_series))
    if role not in source_series or not source_series[role]:
        raise ValueError(f"source_series: has no files for reference role {role!r}")
    # The label map's own instances when the analyzer names them (it left out a localizer or a stray image).
    files = list(label_map.source_files) if label_map is not None and label_map.source_files else list(source_series[role])
    with _step(f"reading the {role} series"):
        sources = _read_series([Path(p) for p in files])
    first = sources[0]
    key_slices, slice_curves = _slice_figures(result)

    provenance = OutputProvenance(
        job_id,
        model,
        series=series,
        device_serial_number=device_serial_number,
        institution_name=institution_name,
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    written = WrittenObjects(paths={"seg": None, "sr": None, "pdf": None, "encapsulated_pdf": None, "secondary_captures": []})

    def save(ds: Dataset, name: str) -> Path:
        apply_patient_module(ds, first)
        path = out_dir / name
        tmp = path.with_suffix(".tmp")
        ds.save_as(tmp, enforce_file_format=True)
        tmp.replace(path)
        try:
            back = read_back(path)
        except Exception as exc:  # noqa: BLE001 - re-raised with the object named
            raise ResultWriteError(f"{name}: written object does not read back: {exc}") from exc
        if check_iod:
            errors = dciodvfy(path)
            if errors:
                raise ResultWriteError(f"{name}: dciodvfy reports {len(errors)} errors, first: {errors[0]}")
        written.sop_instance_uids[path] = str(back.SOPInstanceUID)
        return path

    measurements = list(result.measurements)
    lesions = list(result.extra.get("lesions") or ())
    follow_up = result.extra.get("follow_up")
    response_criteria = result.extra.get("response_criteria")
    metastases = response_criteria == "RANO-BM"
    comparison = result.extra.get("lesion_comparison") if metastases else None
    tracking = dict(result.extra.get("tracking") or {})
    for les in lesions:  # offline runs (no job store): numbered in this exam only
        tracking.setdefault(les.index, (les.index, provenance.uid("lesion-track", str(les.index))))
    seg_ds = None
    segments: tuple[Segment, ...] = ()
    key_images = []
    thumbnails: dict[int, KeyImage] = {}
    written.paths["lesion_thumbnails"] = []
    if label_map is not None:
        segments = _metastasis_segments(label_map.segments) if metastases else label_map.segments
        have = {(m.segment, True) for m in measurements if m.unit.strip().lower() == "ml"}
        with _step("volumes"):
            measurements += [m for m in segment_volumes(label_map, sources) if (m.segment, True) not in have]
        if np.any(label_map.array):
            with _step("SEG"):
                seg_tracking = {f"Lesion {les.index}": (f"Lesion {tracking[les.index][0]}", tracking[les.index][1])
                                for les in lesions} if metastases else None
                seg_ds = build_segmentation(sources, label_map.array, segments, provenance, segmentation_type=segmentation_type,
                                            tracking=seg_tracking)
                written.paths["seg"] = save(seg_ds, "seg.dcm")
        else:
            log.info("empty label map: no SEG written", job_id=job_id)
            segments = ()
        with _step("key images"):
            frames = source_frames(sources)
            volume = None
            if key_slices or slice_curves is not None:  # slice-based results: key slices in windows, the strip
                key_images = render_slice_figures(frames, label_map.array, label_map.segments, key_slices, slice_curves)
            else:
                volume = sorted_volume(frames).astype(np.float32)
                key_images = render_key_images(volume, label_map.array, label_map.segments, slice_spacing(frames), frames[0].orientation)
            measured = [les for les in lesions if les.bidimensional is not None][:MAX_RANO_IMAGES]
            if measured:
                vol_img = frames_image(frames, volume)
                lab_img = frames_image(frames, label_map.array.astype(np.uint8))
                key_images += [render_bidimensional(vol_img, lab_img, label_map.segments, les) for les in measured]
        if metastases and lesions:
            with _step("lesion thumbnails"):
                if volume is None:  # the key images above read it unless the result is slice-based
                    volume = sorted_volume(frames).astype(np.float32)
                _, dr, dc = slice_spacing(frames)
                thumbnails = render_lesion_thumbnails(volume, label_map.array, lesions, tracking, (dr, dc))
                for index, thumb in thumbnails.items():
                    png = out_dir / thumbnail_file(index)
                    png.write_bytes(thumb.png)
                    written.paths["lesion_thumbnails"].append(png)  # type: ignore[union-attr]

    with _step("SR"):
        sr_ds = build_measurement_report(
            [with_top_level_geometry(ds) for ds in sources],
            provenance,
            segmentation=seg_ds,
            segments=segments,
            measurements=measurements,
            findings=result.findings,
            lesions=lesions,
            tracking=tracking,
            follow_up=follow_up,
            lesion_comparison=comparison,
            response_criteria=response_criteria,
        )
        written.paths["sr"] = save(sr_ds, "sr.dcm")

    with _step("PDF report"):
        pdf_bytes = build_report_pdf(
            patient=first,
            model=model,
            branding=branding,
            application=application,
            segments=segments or (label_map.segments if label_map is not None else ()),
            measurements=measurements,
            findings=result.findings,
            key_images=key_images,
            prior_results=prior_results,
            trend_keys=trend_keys,
            method_steps=list(result.extra.get("method_steps") or method_steps),
            flags=result.flags,
            generated_at=dt.datetime.now().replace(microsecond=0),
            lesions=lesions,
            tracking=tracking,
            follow_up=follow_up,
            key_image_heading=result.extra.get("key_image_heading"),
            key_images_per_row=1 if key_slices or slice_curves is not None else 3,
            lesion_comparison=comparison,
            response_criteria=response_criteria,
            lesion_thumbnails=thumbnails,
        )
        pdf_path = out_dir / "report.pdf"
        pdf_path.write_bytes(pdf_bytes)
        written.paths["pdf"] = pdf_path
    with _step("Encapsulated PDF"):
        enc = build_encapsulated_pdf(pdf_bytes, first, provenance, document_title=f"{application} AI report", source_instances=sources)
        written.paths["encapsulated_pdf"] = save(enc, "report_pdf.dcm")

    images = key_image_inputs([*key_images, *thumbnails.values()])
    if render_pages:
        if pdftoppm_available():
            with _step("report page rendering"):
                pages = render_pdf_pages(pdf_bytes)
            images += [(f"Report page {i} of {len(pages)}", page) for i, page in enumerate(pages, start=1)]
        else:
            log.warning("pdftoppm not installed: report pages not sent as secondary capture", job_id=job_id)
    if images:
        with _step("secondary capture"):
            scs = build_secondary_captures(images, first, provenance)
            written.paths["secondary_captures"] = [save(sc, f"sc_{i + 1:03d}.dcm") for i, sc in enumerate(scs)]
    log.info("results written", job_id=job_id, objects=len(written.sop_instance_uids), demo=model.demo)
    return written
