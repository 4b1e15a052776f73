"""The job page's RANO block: per-lesion diameters, the sum of products and,
for a follow-up, the change and the category against the patient's prior.

Built from the job's measurement rows (names in
``radnode.analyzers.glioma.measure`` and ``...glioma.followup``), so the page
shows exactly what the job store holds and what the PDF and SR were built from.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

_LESION = re.compile(r"^lesion_(\d+)_(.+)$")
_CATEGORY = {"CR": "complete response", "PR": "partial response", "SD": "stable disease", "PD": "progressive disease"}


def rano_block(measurements: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """None for a job without RANO rows (other applications, older jobs)."""
    by_name = {m["name"]: m for m in measurements}
    if "rano_sum_of_products" not in by_name:
        return None
    lesions: dict[int, dict[str, float]] = {}
    for m in measurements:
        match = _LESION.match(m["name"])
        if match:
            lesions.setdefault(int(match.group(1)), {})[match.group(2)] = float(m["value"])
    rows = []
    for n in sorted(lesions):
        v = lesions[n]
        longest, perp = v.get("rano_longest"), v.get("rano_perpendicular")
        rows.append({
            "index": n,
            "track": int(v.get("track", n)),
            "whole_ml": v.get("whole_tumor"),
            "enhancing_ml": v.get("enhancing"),
            "longest_mm": longest,
            "perpendicular_mm": perp,
            "product_mm2": v.get("rano_product"),
            "measurable": None if longest is None or perp is None else (longest >= 10.0 and perp >= 10.0),
        })
    block: dict[str, Any] = {"sum_mm2": float(by_name["rano_sum_of_products"]["value"]), "lesions": rows}
    if "rano_category" in by_name:
        code = str(by_name["rano_category"].get("code") or "").split("|")[0]
        block["follow_up"] = {
            "category": code,
            "meaning": _CATEGORY.get(code, ""),
            "prior_sum_mm2": by_name.get("rano_prior_sum_of_products", {}).get("value"),
            "change_vs_prior_pct": by_name.get("rano_change_vs_prior_pct", {}).get("value"),
            "change_vs_nadir_pct": by_name.get("rano_change_vs_nadir_pct", {}).get("value"),
        }
    return block
