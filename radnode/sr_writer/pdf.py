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


def _trend_png(prior: Sequence[PriorResult], current: tuple[str, Mapping[str, float]], keys: Sequence[str], color: str) -> bytes:
    fig, ax = plt.subplots(figsize=(6.4, 2.6), dpi=120)
    points = [*prior, current]
    dates = [str(d) for d, _ in points]
    for i, key in enumerate(keys):
        ys = [float(v[key]) if key in v else np.nan for _, v in points]
        ax.plot(dates, ys, marker="o", label=key, color=[c / 255 for c in PALETTE[i % len(PALETTE)]] if i else color)
    ax.set_ylabel("Volume (mL)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, frameon=False)
    ax.tick_params(labelsize=8)
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
    return m.segment or m.name


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
) -> bytes:
    """Render the report and return the PDF bytes.

    *patient* is any instance of the study (patient/study identifiers are
    read from it). Volume measurements (unit mL) form the main table, keyed
    by ``segment`` (or ``name``); *whole_label* names the row that others are
    a share of (default: the one whose label contains "whole"). The last of
    *prior_results* is "the prior" for the change columns; all of them feed
    the trend plot of *trend_keys* (default: the whole row and any
    "enhancing" row present in the priors).
    """
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
    if branding.logo_path is not None and not branding.logo_path.is_file():
        raise ValueError(f"branding: logo_path {branding.logo_path} does not exist")

    primary = colors.HexColor(branding.primary_color)
    secondary = colors.HexColor(branding.secondary_color)
    generated = generated_at or dt.datetime.now().replace(microsecond=0)
    styles = getSampleStyleSheet()
    body = ParagraphStyle("body", parent=styles["BodyText"], fontSize=9, leading=12)
    small = ParagraphStyle("small", parent=body, fontSize=7.5, leading=9.5, textColor=colors.HexColor("#444444"))
    h1 = ParagraphStyle("h1", parent=styles["Heading1"], fontSize=15, textColor=primary, spaceAfter=4)
    h2 = ParagraphStyle("h2", parent=styles["Heading2"], fontSize=11.5, textColor=primary, spaceBefore=8, spaceAfter=4)
    caption = ParagraphStyle("cap", parent=small, alignment=TA_CENTER)
    banner = ParagraphStyle("banner", parent=body, fontName="Helvetica-Bold", fontSize=12, textColor=colors.white, alignment=TA_CENTER)

    head = ParagraphStyle("head", parent=body, fontName="Helvetica-Bold", fontSize=8.5, leading=10, textColor=colors.white)

    def table(rows: list[list], widths: Sequence[float], align_right_from: int = 1) -> Table:
        rows = [[Paragraph(_esc(str(h)), head) for h in rows[0]], *rows[1:]]  # header cells wrap
        t = Table(rows, colWidths=widths, repeatRows=1, hAlign="LEFT")
        t.setStyle(
            TableStyle(
                [
                    ("BACKGROUND", (0, 0), (-1, 0), primary),
                    ("TEXTCOLOR", (0, 0), (-1, 0), colors.white),
                    ("FONTNAME", (0, 0), (-1, 0), "Helvetica-Bold"),
                    ("FONTSIZE", (0, 0), (-1, -1), 8.5),
                    ("ALIGN", (align_right_from, 1), (-1, -1), "RIGHT"),
                    ("ROWBACKGROUNDS", (0, 1), (-1, -1), [colors.white, colors.HexColor("#f2f4f7")]),
                    ("LINEBELOW", (0, -1), (-1, -1), 0.5, secondary),
                    ("VALIGN", (0, 0), (-1, -1), "MIDDLE"),
                    ("TOPPADDING", (0, 0), (-1, -1), 3),
                    ("BOTTOMPADDING", (0, 0), (-1, -1), 3),
                ]
            )
        )
        return t

    story: list = []
    story.append(Paragraph(f"{_esc(application)} \u2014 AI analysis report", h1))
    if model.demo:
        b = Table([[Paragraph(DEMO_BANNER, banner)]], colWidths=[180 * mm])
        b.setStyle(TableStyle([("BACKGROUND", (0, 0), (-1, -1), colors.HexColor("#c62828")), ("TOPPADDING", (0, 0), (-1, -1), 5), ("BOTTOMPADDING", (0, 0), (-1, -1), 5)]))
        story += [b, Spacer(1, 4 * mm)]

    # Patient and study identifiers.
    ident = [
        ["Patient", _fmt_name(patient.get("PatientName")), "Patient ID", str(patient.get("PatientID", "") or "—")],
        ["Birth date", _fmt_date(patient.get("PatientBirthDate")), "Sex", str(patient.get("PatientSex", "") or "—")],
        ["Accession", str(patient.get("AccessionNumber", "") or "—"), "Study date", _fmt_date(patient.get("StudyDate"))],
        ["Study", str(patient.get("StudyDescription", "") or "—"), "Report generated", generated.strftime("%Y-%m-%d %H:%M")],
    ]
    it = Table(ident, colWidths=[25 * mm, 65 * mm, 30 * mm, 60 * mm], hAlign="LEFT")
    it.setStyle(
        TableStyle(
            [
                ("FONTNAME", (0, 0), (0, -1), "Helvetica-Bold"),
                ("FONTNAME", (2, 0), (2, -1), "Helvetica-Bold"),
                ("FONTSIZE", (0, 0), (-1, -1), 8.5),
                ("TEXTCOLOR", (0, 0), (0, -1), secondary),
                ("TEXTCOLOR", (2, 0), (2, -1), secondary),
                ("BOX", (0, 0), (-1, -1), 0.5, secondary),
                ("TOPPADDING", (0, 0), (-1, -1), 2),
                ("BOTTOMPADDING", (0, 0), (-1, -1), 2),
            ]
        )
    )
    story.append(it)

    # Volumes.
    volumes = [m for m in measurements if _is_volume(m)]
    prior = prior_results[-1] if prior_results else None
    if volumes:
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
                before = prior[1].get(lab)
                if before is None:
                    row += ["—", "—", "—"]
                else:
                    delta = m.value - float(before)
                    pct = f"{100.0 * delta / float(before):+.1f}" if float(before) else "—"
                    row += [f"{float(before):.2f}", f"{delta:+.2f}", pct]
            rows.append(row)
        n = len(header)
        widths = [52 * mm] + [(180 - 52) * mm / (n - 1)] * (n - 1)
        story += [Paragraph("Findings", h2), table(rows, widths)]
        segs_by_name = {s.name: i for i, s in enumerate(segments)}
        legend = [s for s in segments if s.name in segs_by_name]
        if legend:
            swatches = " &nbsp; ".join(
                f'<font color="#{"%02x%02x%02x" % PALETTE[i % len(PALETTE)]}">\u25a0</font> {_esc(s.name)}' for i, s in enumerate(legend)
            )
            story.append(Paragraph(f"Overlay colours: {swatches}", small))

    others = [m for m in measurements if not _is_volume(m)]
    if others:
        rows = [["Measurement", "Region", "Value", "Unit"]] + [[m.name, m.segment or "—", f"{m.value:.2f}", m.unit] for m in others]
        story += [Paragraph("Other measurements", h2), table(rows, [70 * mm, 55 * mm, 30 * mm, 25 * mm], align_right_from=2)]

    if findings:
        rows = [["Finding", "Result", "Probability", "Detail"]]
        for f in findings:
            rows.append([f.name, "Present" if f.present else "Absent", "—" if f.probability is None else f"{100 * f.probability:.0f} %", Paragraph(_esc(f.detail or ""), body)])
        story += [Paragraph("Detections", h2), table(rows, [55 * mm, 25 * mm, 25 * mm, 75 * mm], align_right_from=2)]

    if flags:
        story += [Paragraph("Flagged for review", h2)] + [Paragraph(f"\u2022 {_esc(f)}", body) for f in flags]

    if key_images:
        cells, caps = [], []
        width = 180 * mm / len(key_images) - 3 * mm
        for k in key_images:
            h, w = k.rgb.shape[:2]
            scale = min(width / w, 75 * mm / h)
            cells.append(Image(io.BytesIO(k.png), width=w * scale, height=h * scale))
            caps.append(Paragraph(_esc(k.title), caption))
        grid = Table([cells, caps], colWidths=[180 * mm / len(key_images)] * len(key_images))
        grid.setStyle(TableStyle([("ALIGN", (0, 0), (-1, -1), "CENTER"), ("VALIGN", (0, 0), (-1, -1), "MIDDLE")]))
        story.append(KeepTogether([Paragraph("Key images (segmentation overlay through the lesion centroid)", h2), grid]))

    if prior_results and volumes:
        current = {_label(m): m.value for m in volumes}
        if trend_keys is None:
            whole = whole_label or next((k for k in current if "whole" in k.lower()), None)
            keys = [k for k in current if k == whole or "enhanc" in k.lower()] or list(current)[:3]
        else:
            keys = [k for k in trend_keys if k in current]
        if keys:
            png = _trend_png(prior_results, (_fmt_date(patient.get("StudyDate")) if patient.get("StudyDate") else generated.date().isoformat(), current), keys, branding.primary_color)
            story.append(KeepTogether([Paragraph("Trend", h2), Image(io.BytesIO(png), width=170 * mm, height=170 * mm * 2.6 / 6.4)]))

    method = [Paragraph("Method", h2)]
    for i, step in enumerate(method_steps, start=1):
        method.append(Paragraph(f"{i}. {_esc(step)}", body))
    method.append(Spacer(1, 2 * mm))
    demo_text = '<font color="#c62828"><b>DEMO MODEL \u2014 NOT FOR CLINICAL USE</b></font>' if model.demo else "clinical model"
    method.append(
        Paragraph(
            f"Model: <b>{_esc(model.name)}</b> version <b>{_esc(model.version)}</b> by {_esc(model.manufacturer)} ({demo_text}).",
            body,
        )
    )
    if model.intended_use:
        method.append(Paragraph(f"Intended use: {_esc(model.intended_use)}", body))
    method.append(Spacer(1, 3 * mm))
    method.append(Paragraph(_esc(branding.disclaimer), small))
    story.append(KeepTogether(method))

    def on_page(c: rl_canvas.Canvas, doc: SimpleDocTemplate) -> None:
        width, height = A4
        c.saveState()
        c.setFillColor(primary)
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
        c.setStrokeColor(secondary)
        c.line(15 * mm, 15 * mm, width - 15 * mm, 15 * mm)
        c.setFillColor(colors.HexColor("#444444"))
        c.setFont("Helvetica", 8)
        c.drawString(15 * mm, 10 * mm, branding.footer[:120])
        c.restoreState()

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
