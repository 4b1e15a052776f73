"""The PDF's metastasis section: lesion table with thumbnails, resolved
lesions, and the count / total volume trend over the patient's exams.

Why its own module: RANO-BM reads lesion by lesion (each one's longest
diameter and its status against the prior), which shares nothing with
glioma's product-rule table in :mod:`radnode.sr_writer.pdf` but its styles.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from reportlab.lib.units import mm
from reportlab.platypus import Image, KeepTogether, Paragraph, Spacer

from radnode.model.lesion_rows import (
    COUNT,
    TOTAL_VOLUME,
    TREND_KEYS,
    TREND_LABELS,
    measurable,
    status_of,
)
from radnode.model.lesions import RANO_BM_MEASURABLE_MM, Lesion, LesionComparison

METASTASIS_NOTE = (
    "Automated measurement, not a RANO-BM response assessment: "
    "RANO-BM also weighs corticosteroid use, clinical status, non-target and non-enhancing disease and "
    "confirmation on a later scan. Longest diameter: the lesion's longest axial diameter; measurable when at least "
    f"{RANO_BM_MEASURABLE_MM:.0f} mm. Status against the patient's latest prior exam in radnode: enlarging at "
    "\u2265 20 % and \u2265 2 mm increase of the longest diameter, shrinking at \u2265 30 % and \u2265 2 mm decrease, "
    "stable otherwise; new when no prior lesion matches; resolved when a prior lesion has no match now."
)


def _pct(value: float | None) -> str:
    return "\u2014" if value is None else f"{value:+.0f} %"


def metastasis_section(lesions: Sequence[Lesion], tracking: Mapping[int, tuple[int, str]],
                       comparison: LesionComparison | None, thumbnails: Mapping[int, Any], st: Any,
                       esc: Callable[[str], str], fmt_date: Callable[[object], str], demo: bool = False) -> list:
    """Lesion table (thumbnail, track, location, diameter, volume, confidence, status, change), resolved lesions, totals."""
    story: list = [Paragraph("Brain metastases (lesion by lesion)", st.h2)]
    total = sum(float(les.volumes_ml["whole_tumor"]) for les in lesions)
    sum_mm = sum(les.max_axial_diameter_mm for les in lesions if measurable(les))
    summary = (f"<b>{len(lesions)}</b> lesion(s), total volume <b>{total:.2f} mL</b>; sum of the longest diameters of "
               f"measurable lesions (\u2265 {RANO_BM_MEASURABLE_MM:.0f} mm): <b>{sum_mm:.1f} mm</b>.")
    if comparison is not None:
        summary += (f" Prior exam {esc(fmt_date(comparison.prior_date))}: {comparison.prior_count} lesion(s), "
                    f"{comparison.prior_total_volume_ml:.2f} mL.")
    else:
        summary += " No prior exam of this patient in radnode: every lesion is at baseline."
    story.append(Paragraph(summary, st.body))
    if lesions:
        rows: list[list] = [["Image", "Lesion (track)", "Location", "Longest diameter (mm)", "Volume (mL)", "Confidence",
                             "Status", "Change vs prior (diameter / volume)"]]
        for les in sorted(lesions, key=lambda x: x.index):
            track = tracking.get(les.index, (les.index, ""))[0]
            thumb = thumbnails.get(les.index)
            cell = Image(io.BytesIO(thumb.png), width=18 * mm, height=18 * mm) if thumb is not None else ""
            change = comparison.changes.get(les.index) if comparison is not None else None
            delta = "\u2014" if change is None else f"{_pct(change.diameter_change_pct)} / {_pct(change.volume_change_pct)}"
            rows.append([
                cell, f"{les.index} (track {track})", Paragraph(esc(les.location), st.body),
                f"{les.max_axial_diameter_mm:.1f}", f"{les.volumes_ml['whole_tumor']:.2f}",
                "\u2014" if les.confidence is None else f"{les.confidence:.2f}",
                status_of(les, comparison).value, delta,
            ])
        widths = [20 * mm, 18 * mm, 28 * mm, 20 * mm, 16 * mm, 21 * mm, 20 * mm, 37 * mm]
        story.append(st.table(rows, widths, align_right_from=3))
    resolved = comparison.resolved if comparison is not None else ()
    if resolved:
        rows = [["Lesion (track)", "Location", "Prior longest diameter (mm)", "Prior volume (mL)", "Status"]]
        rows += [[f"track {r.track}", Paragraph(esc(r.location or "\u2014"), st.body), f"{r.prior_diameter_mm:.1f}",
                  f"{r.prior_volume_ml:.2f}", "resolved"] for r in resolved]
        story += [Spacer(1, 2 * mm), Paragraph("Resolved lesions (in the prior exam, not found now)", st.body),
                  st.table(rows, [30 * mm, 45 * mm, 40 * mm, 35 * mm, 30 * mm], align_right_from=2)]
    demo_note = "Demo model \u2014 not for clinical use. " if demo else ""
    story.append(Paragraph(esc(demo_note + METASTASIS_NOTE), st.small))
    return story


def _trend_png(points: Sequence[tuple[str, Mapping[str, float]]], keys: Sequence[str], color: str) -> bytes:
    """One panel per key (count and volume have different units), shared dates."""
    fig, axes = plt.subplots(1, len(keys), figsize=(6.4, 2.6), dpi=120, squeeze=False)
    dates = [d for d, _ in points]
    for ax, key in zip(axes[0], keys):
        ax.plot(dates, [float(v[key]) if key in v else np.nan for _, v in points], marker="o", color=color)
        ax.set_ylabel(TREND_LABELS.get(key, key), fontsize=8)
        if key == COUNT:
            ax.yaxis.get_major_locator().set_params(integer=True)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def metastasis_trend(prior_results: Sequence[tuple[object, Mapping[str, float]]], current: Mapping[str, float],
                     trend_keys: Sequence[str] | None, current_date: str, color: str, st: Any,
                     fmt_date: Callable[[object], str]) -> list:
    """Lesion count and total volume across the patient's exams (the rows :data:`TREND_KEYS` name)."""
    keys = [k for k in (trend_keys if trend_keys is not None else TREND_KEYS) if k in (COUNT, TOTAL_VOLUME) and k in current]
    if not prior_results or not keys:
        return []
    points = [(fmt_date(d), v) for d, v in prior_results] + [(current_date, current)]
    png = _trend_png(points, keys, color)
    return [KeepTogether([Paragraph("Trend: lesion count and total volume", st.h2),
                          Image(io.BytesIO(png), width=170 * mm, height=170 * mm * 2.6 / 6.4)])]
