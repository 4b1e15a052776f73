"""The human-readable PDF report (reportlab), and the key-image renderer.

The PDF is what a referring physician actually reads, so it carries the
patient/study identifiers (it is a clinical document, unlike the logs), the
numbers, pictures that show *where* the numbers come from, and — on every
page — whether the model is a demo. Sections are driven by the data: a
detection application without label maps gets a findings table and no key
images; a result without priors gets no trend plot.

Key images are rendered once (:func:`render_key_images`) and reused for the
Secondary Capture objects, so the PDF and the SC show the same pixels.
"""

from __future__ import annotations

import datetime as dt
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import structlog  # noqa: E402
from pydicom.dataset import Dataset  # noqa: E402
from reportlab.lib import colors  # noqa: E402
from reportlab.lib.enums import TA_CENTER  # noqa: E402
from reportlab.lib.pagesizes import A4  # noqa: E402
from reportlab.lib.styles import ParagraphStyle, getSampleStyleSheet  # noqa: E402
from reportlab.lib.units import mm  # noqa: E402
from reportlab.lib.utils import ImageReader  # noqa: E402
from reportlab.pdfgen import canvas as rl_canvas  # noqa: E402
from reportlab.platypus import (  # noqa: E402
    Image,
    KeepTogether,
    Paragraph,
    SimpleDocTemplate,
    Spacer,
    Table,
    TableStyle,
)

from radnode.model.analysis import Finding, Measurement, ModelInfo, Segment  # noqa: E402
from radnode.model.branding import ReportBranding  # noqa: E402
from radnode.model.lesions import FollowUp, Lesion, LesionComparison  # noqa: E402

log = structlog.get_logger(__name__)

DEMO_BANNER = "DEMO \u2014 NOT FOR CLINICAL USE"

#: Overlay colours per segment (colour-blind friendly, Okabe-Ito).
PALETTE = ((230, 159, 0), (86, 180, 233), (213, 94, 0), (0, 158, 115), (204, 121, 167), (240, 228, 66), (0, 114, 178))

#: (prior date, {row label: value}) — earlier results, oldest first.
PriorResult = tuple["dt.date | str", Mapping[str, float]]

_PLANE_BY_AXIS = {0: "Sagittal", 1: "Coronal", 2: "Axial"}


@dataclass(frozen=True)
class KeyImage:
    """One rendered overlay: title, RGB pixels (for SC) and PNG (for PDF)."""

    title: str
    rgb: np.ndarray
    png: bytes


def _overlay_rgb(gray: np.ndarray, labels: np.ndarray, segments: Sequence[Segment], lo: float, hi: float) -> np.ndarray:
    base = np.clip((gray.astype(float) - lo) / max(hi - lo, 1e-6), 0, 1)
    rgb = np.repeat(base[..., None], 3, axis=2)
    for i, s in enumerate(segments):
        mask = labels == s.value
        if mask.any():
            colour = np.asarray(PALETTE[i % len(PALETTE)], dtype=float) / 255
            rgb[mask] = 0.55 * rgb[mask] + 0.45 * colour
    return rgb


def render_key_images(
    volume: np.ndarray,
    label_map: np.ndarray,
    segments: Sequence[Segment],
    spacing: tuple[float, float, float],
    orientation: Sequence[float] | None = None,
    *,
    size_px: int = 512,
) -> list[KeyImage]:
    """Three orthogonal planes through the label map's centroid, overlaid.

    *volume* and *label_map* are ``(Z, Y, X)`` in sorted-source order,
    *spacing* is (slice, row, column) in mm, *orientation* the series'
    Image Orientation (Patient) (names the planes; default axial). Images
    are resampled to square pixels and the reformats are flipped so the
    patient's head is up.
    """
    if not isinstance(volume, np.ndarray) or volume.ndim != 3:
        raise ValueError("volume: must be a 3-D numpy array (Z, Y, X)")
    if not isinstance(label_map, np.ndarray) or label_map.shape != volume.shape:
        raise ValueError("label_map: must be a numpy array with the volume's shape")
    if len(spacing) != 3 or min(spacing) <= 0:
        raise ValueError("spacing: must be three positive numbers (slice, row, column)")
    iop = np.asarray(orientation if orientation is not None else (1, 0, 0, 0, 1, 0), dtype=float)
    row_dir, col_dir = iop[:3], iop[3:]
    normal = np.cross(row_dir, col_dir)
    names = (
        _PLANE_BY_AXIS[int(np.argmax(np.abs(normal)))],
        _PLANE_BY_AXIS[int(np.argmax(np.abs(col_dir)))],  # fixed row → plane ⟂ column direction
        _PLANE_BY_AXIS[int(np.argmax(np.abs(row_dir)))],
    )
    fg = np.argwhere(label_map > 0)
    cz, cy, cx = (fg.mean(axis=0).round().astype(int) if len(fg) else np.array(volume.shape) // 2)
    lo, hi = (float(v) for v in np.percentile(volume, [1, 99.5]))
    dz, dy, dx = spacing
    # Flip slice axis so superior (higher position along +z-ish normal) is up.
    up = -1 if normal[int(np.argmax(np.abs(normal)))] > 0 else 1
    planes = [
        (names[0], volume[cz], label_map[cz], dy / dx),
        (names[1], volume[::up, cy, :], label_map[::up, cy, :], dz / dx),
        (names[2], volume[::up, :, cx], label_map[::up, :, cx], dz / dy),
    ]
    out = []
    for title, gray, lab, aspect in planes:
        rgb = _overlay_rgb(gray, lab, segments, lo, hi)
        h, w = rgb.shape[:2]
        height_mm, width_mm = h * aspect, w
        scale = size_px / max(height_mm, width_mm)
        fig = plt.figure(figsize=(width_mm * scale / 100, height_mm * scale / 100), dpi=100)
        ax = fig.add_axes((0, 0, 1, 1))
        ax.imshow(rgb, aspect=aspect, interpolation="nearest")
        ax.set_axis_off()
        fig.canvas.draw()
        pixels = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=100)
        plt.close(fig)
        out.append(KeyImage(title=title, rgb=pixels, png=buf.getvalue()))
    return out


def _trend_png(prior: Sequence[PriorResult], current: tuple[str, Mapping[str, float]], keys: Sequence[str], color: str,
               labels: Mapping[str, str] | None = None, spd: Sequence[float | None] | None = None) -> bytes:
    """Volumes over time (and the RANO sum of products on a second panel when given).

    Dates are formatted one way (YYYY-MM-DD) whatever form they arrive in.
    """
    panels = 2 if spd is not None and any(v is not None for v in spd) else 1
    fig, axes = plt.subplots(1, panels, figsize=(6.4, 2.6), dpi=120, squeeze=False)
    ax = axes[0][0]
    points = [*prior, current]
    dates = [_fmt_date(d) for d, _ in points]
    for i, key in enumerate(keys):
        ys = [float(v[key]) if key in v else np.nan for _, v in points]
        ax.plot(dates, ys, marker="o", label=(labels or {}).get(key, key),
                color=[c / 255 for c in PALETTE[i % len(PALETTE)]] if i else color)
    ax.set_ylabel("Volume (mL)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, frameon=False)
    ax.tick_params(labelsize=7)
    if panels == 2:
        bx = axes[0][1]
        bx.plot(dates, [np.nan if v is None else v for v in spd], marker="s", color=color)  # type: ignore[union-attr]
        bx.set_ylabel("Sum of products (mm\u00b2)", fontsize=8)
        bx.grid(alpha=0.3)
        bx.tick_params(labelsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def _fmt_date(value: object) -> str:
    text = str(value or "")
    if len(text) == 8 and text.isdigit():
        return f"{text[:4]}-{text[4:6]}-{text[6:]}"
    return text or "—"


def _fmt_name(value: object) -> str:
    parts = str(value or "").split("^")
    if len(parts) >= 2 and parts[1]:
        return f"{parts[0]}, {' '.join(p for p in parts[1:] if p)}"
    return parts[0] or "—"


def _is_volume(m: Measurement) -> bool:
    return m.unit.strip().lower() in ("ml", "cm3")


def _label(m: Measurement) -> str:
    """The row label: the region measured, and the method when it tells two values apart (ABC/2)."""
    label = m.segment or m.name
    return f"{label}, {m.method[2]}" if m.method is not None else label


class _NumberedCanvas(rl_canvas.Canvas):
    """Defers page output so every page can say "Page X of Y"."""

    def __init__(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self._saved: list[dict] = []

    def showPage(self) -> None:  # noqa: N802 (reportlab API)
        self._saved.append(dict(self.__dict__))
        self._startPage()

    def save(self) -> None:
        total = len(self._saved)
        for state in self._saved:
            self.__dict__.update(state)
            self.setFont("Helvetica", 8)
            self.setFillColor(colors.HexColor("#444444"))
            self.drawRightString(A4[0] - 15 * mm, 10 * mm, f"Page {self._pageNumber} of {total}")
            super().showPage()
        super().save()


@dataclass(frozen=True)
class _Styles:
    """Paragraph styles and colours shared by every section."""

    primary: colors.Color
    secondary: colors.Color
    body: ParagraphStyle
    small: ParagraphStyle
    h1: ParagraphStyle
    h2: ParagraphStyle
    caption: ParagraphStyle
    banner: ParagraphStyle
    head: ParagraphStyle

    @classmethod
    def of(cls, branding: ReportBranding) -> "_Styles":
        primary = colors.HexColor(branding.primary_color)
        styles = getSampleStyleSheet()
        body = ParagraphStyle("body", parent=styles["BodyText"], fontSize=9, leading=12)
        small = ParagraphStyle("small", parent=body, fontSize=7.5, leading=9.5, textColor=colors.HexColor("#444444"))
        return cls(
            primary=primary,
            secondary=colors.HexColor(branding.secondary_color),
            body=body,
            small=small,
            h1=ParagraphStyle("h1", parent=styles["Heading1"], fontSize=15, textColor=primary, spaceAfter=4),
            h2=ParagraphStyle("h2", parent=styles["Heading2"], fontSize=11.5, textColor=primary, spaceBefore=8, spaceAfter=4),
            caption=ParagraphStyle("cap", parent=small, alignment=TA_CENTER),
            banner=ParagraphStyle("banner", parent=body, fontName="Helvetica-Bold", fontSize=12, textColor=colors.white, alignment=TA_CENTER),
            head=ParagraphStyle("head", parent=body, fontName="Helvetica-Bold", fontSize=8.5, leading=10, textColor=colors.white),
        )

    def table(self, rows: list[list], widths: Sequence[float], align_right_from: int = 1) -> Table:
        rows = [[Paragraph(_esc(str(h)), self.head) for h in rows[0]], *rows[1:]]  # header cells wrap
        t = Table(rows, colWidths=widths, repeatRows=1, hAlign="LEFT")
        t.setStyle(
            TableStyle(
                [
                    ("BACKGROUND", (0, 0), (-1, 0), self.primary),
                    ("TEXTCOLOR", (0, 0), (-1, 0), colors.white),
                    ("FONTNAME", (0, 0), (-1, 0), "Helvetica-Bold"),
                    ("FONTSIZE", (0, 0), (-1, -1), 8.5),
                    ("ALIGN", (align_right_from, 1), (-1, -1), "RIGHT"),
                    ("ROWBACKGROUNDS", (0, 1), (-1, -1), [colors.white, colors.HexColor("#f2f4f7")]),
                    ("LINEBELOW", (0, -1), (-1, -1), 0.5, self.secondary),
                    ("VALIGN", (0, 0), (-1, -1), "MIDDLE"),
                    ("TOPPADDING", (0, 0), (-1, -1), 3),
                    ("BOTTOMPADDING", (0, 0), (-1, -1), 3),
                ]
            )
        )
        return t


def _check_report_arguments(patient: object, model: object, branding: object, application: object,
                            measurements: Sequence[object], findings: Sequence[object], prior_results: Sequence[object],
                            lesions: Sequence[object], follow_up: object) -> None:
    if not isinstance(patient, Dataset):
        raise TypeError(f"patient: expected a pydicom Dataset, got {type(patient).__name__}")
    if not isinstance(model, ModelInfo):
        raise TypeError(f"model: expected ModelInfo, got {type(model).__name__}")
    if not isinstance(branding, ReportBranding):
        raise TypeError(f"branding: expected ReportBranding, got {type(branding).__name__}")
    if not isinstance(application, str) or not application.strip():
        raise ValueError("application: must be a non-empty string")
    for i, m in enumerate(measurements):
        if not isinstance(m, Measurement):
            raise TypeError(f"measurements: item {i} is {type(m).__name__}, not Measurement")
    for i, f in enumerate(findings):
        if not isinstance(f, Finding):
            raise TypeError(f"findings: item {i} is {type(f).__name__}, not Finding")
    for i, p in enumerate(prior_results):
        if not (isinstance(p, tuple) and len(p) == 2 and isinstance(p[1], Mapping)):
            raise TypeError(f"prior_results: item {i} must be (date, {{name: value}})")
    for i, les in enumerate(lesions):
        if not isinstance(les, Lesion):
            raise TypeError(f"lesions: item {i} is {type(les).__name__}, not Lesion")
    if follow_up is not None and not isinstance(follow_up, FollowUp):
        raise TypeError(f"follow_up: expected FollowUp, got {type(follow_up).__name__}")
    if branding.logo_path is not None and not branding.logo_path.is_file():
        raise ValueError(f"branding: logo_path {branding.logo_path} does not exist")


def _title(application: str, model: ModelInfo, st: _Styles) -> list:
    story: list = [Paragraph(f"{_esc(application)} \u2014 AI analysis report", st.h1)]
    if model.demo:
        b = Table([[Paragraph(DEMO_BANNER, st.banner)]], colWidths=[180 * mm])
        b.setStyle(TableStyle([("BACKGROUND", (0, 0), (-1, -1), colors.HexColor("#c62828")), ("TOPPADDING", (0, 0), (-1, -1), 5), ("BOTTOMPADDING", (0, 0), (-1, -1), 5)]))
        story += [b, Spacer(1, 4 * mm)]
    return story


def _fmt_age(value: object) -> str:
    """DICOM AS (``045Y``) → ``45 years``."""
    text = str(value or "")
    units = {"Y": "years", "M": "months", "W": "weeks", "D": "days"}
    if len(text) == 4 and text[:3].isdigit() and text[3] in units:
        return f"{int(text[:3])} {units[text[3]]}"
    return text or "\u2014"


def _identifiers(patient: Dataset, generated: dt.datetime, st: _Styles) -> list:
    """Patient and study identifiers as the source images carry them."""
    weight = patient.get("PatientWeight")
    ident = [
        ["Patient", _fmt_name(patient.get("PatientName")), "Patient ID", str(patient.get("PatientID", "") or "\u2014")],
        ["Birth date", _fmt_date(patient.get("PatientBirthDate")), "Sex", str(patient.get("PatientSex", "") or "\u2014")],
        ["Age", _fmt_age(patient.get("PatientAge")), "Weight", f"{float(weight):g} kg" if weight not in (None, "") else "\u2014"],
        ["Accession", str(patient.get("AccessionNumber", "") or "\u2014"), "Study date", _fmt_date(patient.get("StudyDate"))],
        ["Study", str(patient.get("StudyDescription", "") or "\u2014"), "Report generated", generated.strftime("%Y-%m-%d %H:%M")],
    ]
    it = Table(ident, colWidths=[25 * mm, 65 * mm, 30 * mm, 60 * mm], hAlign="LEFT")
    it.setStyle(
        TableStyle(
            [
                ("FONTNAME", (0, 0), (0, -1), "Helvetica-Bold"),
                ("FONTNAME", (2, 0), (2, -1), "Helvetica-Bold"),
                ("FONTSIZE", (0, 0), (-1, -1), 8.5),
                ("TEXTCOLOR", (0, 0), (0, -1), st.secondary),
                ("TEXTCOLOR", (2, 0), (2, -1), st.secondary),
                ("BOX", (0, 0), (-1, -1), 0.5, st.secondary),
                ("TOPPADDING", (0, 0), (-1, -1), 2),
                ("BOTTOMPADDING", (0, 0), (-1, -1), 2),
            ]
        )
    )
    return [it]


def _prior_value(prior: Mapping[str, float], m: Measurement) -> float | None:
    """A prior's value for *m*: by row name (what the job store keeps), else by label."""
    value = prior.get(m.name, prior.get(_label(m)))
    return None if value is None else float(value)


def _volumes(volumes: Sequence[Measurement], segments: Sequence[Segment], prior: PriorResult | None,
             whole_label: str | None, st: _Styles) -> list:
    """The main table: one row per region volume, its share and the change against the prior."""
    if not volumes:
        return []
    labels = [_label(m) for m in volumes]
    whole = whole_label or next((lab for lab in labels if "whole" in lab.lower()), None)
    whole_value = next((m.value for m in volumes if _label(m) == whole), None)
    header = ["Region", "Volume (mL)"]
    if whole_value:
        header.append(f"Share of {whole.lower() if whole else 'total'} (%)")
    if prior is not None:
        header += [f"Prior {_fmt_date(prior[0])} (mL)", "Change (mL)", "Change (%)"]
    rows: list[list] = [header]
    for m in volumes:
        lab = _label(m)
        row = [lab, f"{m.value:.2f}"]
        if whole_value:
            row.append("" if lab == whole else f"{100.0 * m.value / whole_value:.1f}")
        if prior is not None:
            before = _prior_value(prior[1], m)
            if before is None:
                row += ["\u2014", "\u2014", "\u2014"]
            else:
                delta = m.value - before
                pct = f"{100.0 * delta / before:+.1f}" if before else "\u2014"
                row += [f"{before:.2f}", f"{delta:+.2f}", pct]
        rows.append(row)
    n = len(header)
    widths = [52 * mm] + [(180 - 52) * mm / (n - 1)] * (n - 1)
    story: list = [Paragraph("Findings", st.h2), st.table(rows, widths)]
    if segments:
        swatches = " &nbsp; ".join(
            f'<font color="#{"%02x%02x%02x" % PALETTE[i % len(PALETTE)]}">\u25a0</font> {_esc(s.name)}' for i, s in enumerate(segments)
        )
        story.append(Paragraph(f"Overlay colours: {swatches}", st.small))
    return story


RANO_NOTE = (
    "Automated measurement, not a response assessment: RANO also weighs clinical status, corticosteroid dose, "
    "non-enhancing (T2/FLAIR) disease and confirmation on a later scan. Diameters: longest axial diameter of the "
    "contrast-enhancing lesion and the longest diameter perpendicular to it on the same slice; measurable when "
    "both are at least 10 mm. Category by the product rule: PR \u2265 50 % decrease of the sum of products against "
    "the baseline, PD \u2265 25 % increase against the smallest sum so far or a new measurable lesion, CR no "
    "enhancing disease, SD otherwise."
)


def _lesions(lesions: Sequence[Lesion], tracking: Mapping[int, tuple[int, str]], follow_up: FollowUp | None,
             st: _Styles) -> list:
    """Per-lesion table (volumes, location, RANO diameters) and the follow-up against the prior."""
    if not lesions:
        return []
    rows: list[list] = [["Lesion", "Location", "Whole (mL)", "Enhancing (mL)", "Largest axial diameter (mm)",
                         "RANO diameters (mm)", "Product (mm\u00b2)", "Measur\u00adable"]]
    for les in lesions:
        bi = les.bidimensional
        track = tracking.get(les.index, (les.index, ""))[0]
        rows.append([
            f"{les.index} (track {track})", Paragraph(_esc(les.location), st.body), f"{les.volumes_ml['whole_tumor']:.2f}",
            f"{les.volumes_ml['enhancing']:.2f}", f"{les.max_axial_diameter_mm:.1f}",
            "\u2014" if bi is None else f"{bi.longest_mm:.1f} \u00d7 {bi.perpendicular_mm:.1f}",
            "\u2014" if bi is None else f"{bi.product_mm2:.0f}",
            "\u2014" if bi is None else ("yes" if bi.measurable else "no"),
        ])
    widths = [22 * mm, 34 * mm, 17 * mm, 20 * mm, 22 * mm, 26 * mm, 19 * mm, 20 * mm]
    total = sum(les.bidimensional.product_mm2 for les in lesions if les.bidimensional and les.bidimensional.measurable)
    story: list = [Paragraph("Lesions and RANO measurements", st.h2), st.table(rows, widths, align_right_from=2)]
    story.append(Paragraph(f"Sum of products of measurable enhancing lesions: <b>{total:.0f} mm\u00b2</b>", st.body))
    if follow_up is not None:
        def pct(v: float | None) -> str:
            return "\u2014" if v is None else f"{v:+.1f} %"

        rows = [["Against", "Date", "Sum of products (mm\u00b2)", "Change"],
                ["Prior exam", _fmt_date(follow_up.prior_date), f"{follow_up.prior_sum_mm2:.0f}", pct(follow_up.change_vs_prior_pct)],
                ["Nadir (smallest so far)", "", f"{follow_up.nadir_sum_mm2:.0f}", pct(follow_up.change_vs_nadir_pct)],
                ["Baseline (first exam)", _fmt_date(follow_up.baseline_date), f"{follow_up.baseline_sum_mm2:.0f}", pct(follow_up.change_vs_baseline_pct)]]
        story += [Spacer(1, 2 * mm), st.table(rows, [50 * mm, 30 * mm, 45 * mm, 30 * mm], align_right_from=2)]
        new = f"; new lesion(s): {', '.join(str(i) for i in follow_up.new_lesions)}" if follow_up.new_lesions else ""
        story.append(Paragraph(
            f"RANO imaging category by the product rule: <b>{follow_up.category.value} ({follow_up.category.meaning})</b> "
            f"\u2014 {_esc(follow_up.reason)}{_esc(new)}.", st.body))
    story.append(Paragraph(_esc(RANO_NOTE), st.small))
    return story


def _quantity(m: Measurement) -> str:
    """A measurement's row name: its concept and method when it names a method (e.g. "Long Axis, ABC/2"), else its name."""
    if m.method is None:
        return m.name
    return f"{m.code[2] if m.code is not None else m.name}, {m.method[2]}"


def _other_measurements(others: Sequence[Measurement], st: _Styles) -> list:
    if not others:
        return []
    rows = [["Measurement", "Region", "Value", "Unit"]] + [[_quantity(m), m.segment or "\u2014", f"{m.value:.2f}", m.unit] for m in others]
    return [Paragraph("Other measurements", st.h2), st.table(rows, [70 * mm, 55 * mm, 30 * mm, 25 * mm], align_right_from=2)]


def _detections(findings: Sequence[Finding], st: _Styles) -> list:
    if not findings:
        return []
    rows = [["Finding", "Result", "Probability", "Detail"]]
    for f in findings:
        rows.append([f.name, "Present" if f.present else "Absent", "\u2014" if f.probability is None else f"{100 * f.probability:.0f} %", Paragraph(_esc(f.detail or ""), st.body)])
    return [Paragraph("Detections", st.h2), st.table(rows, [55 * mm, 25 * mm, 25 * mm, 75 * mm], align_right_from=2)]


def _flags(flags: Sequence[str], st: _Styles) -> list:
    if not flags:
        return []
    return [Paragraph("Flagged for review", st.h2)] + [Paragraph(f"\u2022 {_esc(f)}", st.body) for f in flags]


def _key_images(key_images: Sequence[KeyImage], st: _Styles, heading: str | None = None, per_row: int = 3) -> list:
    """Up to *per_row* images per row (the orthogonal planes, then the RANO views; wide key slices one a row)."""
    if not key_images:
        return []
    if per_row < 1:
        raise ValueError(f"key_images_per_row: must be at least 1, got {per_row}")
    story: list = []
    for start in range(0, len(key_images), per_row):
        chunk = key_images[start:start + per_row]
        cells, caps = [], []
        width = 180 * mm / len(chunk) - 3 * mm
        for k in chunk:
            h, w = k.rgb.shape[:2]
            scale = min(width / w, (75 if per_row > 1 else 70) * mm / h)
            cells.append(Image(io.BytesIO(k.png), width=w * scale, height=h * scale))
            caps.append(Paragraph(_esc(k.title), st.caption))
        grid = Table([cells, caps], colWidths=[180 * mm / len(chunk)] * len(chunk))
        grid.setStyle(TableStyle([("ALIGN", (0, 0), (-1, -1), "CENTER"), ("VALIGN", (0, 0), (-1, -1), "MIDDLE")]))
        first = heading or "Key images (segmentation overlay through the lesion centroid)"
        title = first if start == 0 else "Key images (continued)"
        story.append(KeepTogether([Paragraph(title, st.h2), grid]))
    return story


def _trend(prior_results: Sequence[PriorResult], volumes: Sequence[Measurement], measurements: Sequence[Measurement],
           trend_keys: Sequence[str] | None, whole_label: str | None, current_date: str, branding: ReportBranding,
           st: _Styles) -> list:
    """Volumes (by row name, as the job store keeps them) and the sum of products over time."""
    if not prior_results or not volumes:
        return []
    current = {m.name: m.value for m in volumes}
    labels = {m.name: _label(m) for m in volumes}
    if trend_keys is None:
        whole = whole_label or next((m.name for m in volumes if "whole" in _label(m).lower()), None)
        keys = [m.name for m in volumes if m.name == whole or "enhanc" in _label(m).lower()] or list(current)[:3]
    else:
        keys = [k for k in trend_keys if k in current]
    if not keys:
        return []
    spd_now = next((m.value for m in measurements if m.name == "rano_sum_of_products"), None)
    spd = None
    if spd_now is not None:
        spd = [p[1].get("rano_sum_of_products") for p in prior_results] + [spd_now]
    png = _trend_png(prior_results, (current_date, current), keys, branding.primary_color, labels, spd)
    return [KeepTogether([Paragraph("Trend", st.h2), Image(io.BytesIO(png), width=170 * mm, height=170 * mm * 2.6 / 6.4)])]


def _method(method_steps: Sequence[str], model: ModelInfo, branding: ReportBranding, st: _Styles) -> list:
    method = [Paragraph("Method", st.h2)]
    for i, step in enumerate(method_steps, start=1):
        method.append(Paragraph(f"{i}. {_esc(step)}", st.body))
    method.append(Spacer(1, 2 * mm))
    demo_text = '<font color="#c62828"><b>DEMO MODEL \u2014 NOT FOR CLINICAL USE</b></font>' if model.demo else "clinical model"
    method.append(
        Paragraph(
            f"Model: <b>{_esc(model.name)}</b> version <b>{_esc(model.version)}</b> by {_esc(model.manufacturer)} ({demo_text}).",
            st.body,
        )
    )
    if model.intended_use:
        method.append(Paragraph(f"Intended use: {_esc(model.intended_use)}", st.body))
    method.append(Spacer(1, 3 * mm))
    method.append(Paragraph(_esc(branding.disclaimer), st.small))
    return [KeepTogether(method)]


def _page_decorator(branding: ReportBranding, model: ModelInfo, st: _Styles):  # type: ignore[no-untyped-def]
    """Header band (institution, logo, demo strip) and footer on every page."""

    def on_page(c: rl_canvas.Canvas, doc: SimpleDocTemplate) -> None:
        width, height = A4
        c.saveState()
        c.setFillColor(st.primary)
        c.rect(0, height - 22 * mm, width, 22 * mm, stroke=0, fill=1)
        c.setFillColor(colors.white)
        c.setFont("Helvetica-Bold", 13)
        c.drawString(15 * mm, height - 11 * mm, branding.institution_name)
        c.setFont("Helvetica", 8.5)
        sub = " \u00b7 ".join(x for x in (branding.department, branding.address) if x)
        if sub:
            c.drawString(15 * mm, height - 16.5 * mm, sub)
        if branding.logo_path is not None:
            logo = ImageReader(str(branding.logo_path))
            lw, lh = logo.getSize()
            box_h = 16 * mm
            box_w = box_h * lw / lh
            c.drawImage(logo, width - 15 * mm - box_w, height - 19 * mm, box_w, box_h, mask="auto")
        if model.demo:
            c.setFillColor(colors.HexColor("#c62828"))
            c.rect(0, height - 27 * mm, width, 5 * mm, stroke=0, fill=1)
            c.setFillColor(colors.white)
            c.setFont("Helvetica-Bold", 8.5)
            c.drawCentredString(width / 2, height - 25.6 * mm, DEMO_BANNER)
        c.setStrokeColor(st.secondary)
        c.line(15 * mm, 15 * mm, width - 15 * mm, 15 * mm)
        c.setFillColor(colors.HexColor("#444444"))
        c.setFont("Helvetica", 8)
        c.drawString(15 * mm, 10 * mm, branding.footer[:120])
        c.restoreState()

    return on_page


def _is_lesion_row(m: Measurement, metastases: bool = False) -> bool:
    """Per-lesion, RANO and metastasis rows: shown in the lesion section, not as "other measurements"
    (for metastases also each "Lesion <k>" segment's volume: the lesion table has it)."""
    return m.name.startswith(("lesion_", "rano_", "met_")) or (metastases and (m.segment or "").startswith("Lesion "))


def build_report_pdf(
    *,
    patient: Dataset,
    model: ModelInfo,
    branding: ReportBranding,
    application: str,
    segments: Sequence[Segment] = (),
    measurements: Sequence[Measurement] = (),
    findings: Sequence[Finding] = (),
    key_images: Sequence[KeyImage] = (),
    prior_results: Sequence[PriorResult] = (),
    trend_keys: Sequence[str] | None = None,
    method_steps: Sequence[str] = (),
    flags: Sequence[str] = (),
    whole_label: str | None = None,
    generated_at: dt.datetime | None = None,
    lesions: Sequence[Lesion] = (),
    tracking: Mapping[int, tuple[int, str]] | None = None,
    follow_up: FollowUp | None = None,
    key_image_heading: str | None = None,
    key_images_per_row: int = 3,
    lesion_comparison: LesionComparison | None = None,
    response_criteria: str | None = None,
    lesion_thumbnails: Mapping[int, KeyImage] | None = None,
) -> bytes:
    """Render the report and return the PDF bytes.

    *patient* is any instance of the study (patient/study identifiers are
    read from it). Volume measurements (unit mL) form the main table, keyed
    by ``segment`` (or ``name``); *whole_label* names the row that others are
    a share of (default: the one whose label contains "whole"). The last of
    *prior_results* is "the prior" for the change columns, looked up by row
    name; all of them feed the trend plot of *trend_keys* (row names;
    default: the whole row and any enhancing row). *lesions* (with their
    *tracking* numbers and the *follow_up* against the prior) add the lesion
    and RANO section. *key_image_heading* / *key_images_per_row* lay out other
    kinds of key image (e.g. a CT slice in three windows, one per row).
    With *response_criteria* "RANO-BM" (metastases) the lesion section is
    the lesion-by-lesion table (:mod:`radnode.sr_writer.pdf_metastasis`:
    *lesion_thumbnails* by lesion index, status and change from
    *lesion_comparison*, resolved lesions) and the trend follows the lesion
    count and total volume rows.
    """
    _check_report_arguments(patient, model, branding, application, measurements, findings, prior_results, lesions, follow_up)
    st = _Styles.of(branding)
    generated = generated_at or dt.datetime.now().replace(microsecond=0)
    metastases = response_criteria == "RANO-BM"
    if lesion_comparison is not None and not isinstance(lesion_comparison, LesionComparison):
        raise TypeError(f"lesion_comparison: expected LesionComparison, got {type(lesion_comparison).__name__}")
    hide = bool(lesions) or metastases
    volumes = [m for m in measurements if _is_volume(m) and not (hide and _is_lesion_row(m, metastases))]
    others = [m for m in measurements if not _is_volume(m) and not (hide and _is_lesion_row(m, metastases))]
    prior = prior_results[-1] if prior_results else None
    current_date = _fmt_date(patient.get("StudyDate")) if patient.get("StudyDate") else generated.date().isoformat()

    story: list = []
    story += _title(application, model, st)
    story += _identifiers(patient, generated, st)
    story += _volumes(volumes, segments, prior, whole_label, st)
    if metastases:
        from radnode.sr_writer.pdf_metastasis import metastasis_section

        story += metastasis_section(lesions, tracking or {}, lesion_comparison, lesion_thumbnails or {}, st, _esc, _fmt_date, model.demo)
    else:
        story += _lesions(lesions, tracking or {}, follow_up, st)
    story += _other_measurements(others, st)
    story += _detections(findings, st)
    story += _flags(flags, st)
    story += _key_images(key_images, st, key_image_heading, key_images_per_row)
    if metastases:
        from radnode.sr_writer.pdf_metastasis import metastasis_trend

        story += metastasis_trend(prior_results, {m.name: m.value for m in measurements}, trend_keys, current_date,
                                  branding.primary_color, st, _fmt_date)
    else:
        story += _trend(prior_results, volumes, measurements, trend_keys, whole_label, current_date, branding, st)
    story += _method(method_steps, model, branding, st)

    on_page = _page_decorator(branding, model, st)
    buf = io.BytesIO()
    doc = SimpleDocTemplate(
        buf,
        pagesize=A4,
        leftMargin=15 * mm,
        rightMargin=15 * mm,
        topMargin=32 * mm,
        bottomMargin=20 * mm,
        title=f"{application} AI analysis report",
        author=branding.institution_name,
        creator="radnode",
        subject=DEMO_BANNER if model.demo else "AI analysis report",
    )
    doc.build(story, onFirstPage=on_page, onLaterPages=on_page, canvasmaker=_NumberedCanvas)
    data = buf.getvalue()
    log.info("pdf report built", pages=data.count(b"/Type /Page") - data.count(b"/Type /Pages"), bytes=len(data), demo=model.demo)
    return data


def _esc(text: str) -> str:
    """Escape for reportlab's mini-HTML (names can contain '&' or '<')."""
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
