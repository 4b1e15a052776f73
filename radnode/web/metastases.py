"""The job page's metastasis block: every lesion with its thumbnail, location,
longest diameter, volume, confidence and status against the prior exam, and
the lesions of the prior exam that resolved.

Built from the job's stored measurement rows (names in
:mod:`radnode.model.lesion_rows`, the module the analyzer emits them with)
and the thumbnails the result writer left next to the results, so the page
shows what the job store holds and what the PDF and SR were built from.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from radnode.model.lesion_rows import read_lesion_rows


def metastasis_block(measurements: Sequence[Mapping[str, Any]], files: Mapping[str, Any]) -> dict[str, Any] | None:
    """None for a job without metastasis rows (other applications, older jobs)."""
    block = read_lesion_rows(measurements)
    if block is None:
        return None
    thumbnails = files.get("lesion_thumbnails") or {}
    for lesion in block["lesions"]:  # type: ignore[union-attr]
        lesion["thumbnail"] = thumbnails.get(lesion["index"])
    return block
