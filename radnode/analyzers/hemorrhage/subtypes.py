"""The six haemorrhage labels, their names and codes, and how a model's manifest maps onto them.

Why a separate mapping step: the analyzer reports on fixed clinical labels
(the RSNA 2019 scheme: any, epidural, subdural, intraparenchymal,
intraventricular, subarachnoid) while a model names its outputs in its
manifest (``ct.slice_outputs`` for the per-slice head, ``labels`` for the
segmentation channels). :func:`layout_of` checks once, at load, that a model
provides every label, so a mismatched model fails with a message naming what
is missing instead of reporting on the wrong channel.

Codes (SNOMED CT; the report falls back to a local code where the manifest
gives none): "any" is SCT 1386000 |Intracranial hemorrhage|, listed in
DICOM's code dictionary (pydicom ``codes.SCT.IntracranialHemorrhage``); a
segment without a manifest code is SCT 50960005 |Hemorrhage| (DICOM CID 7151,
segmentation property types), its label naming the compartment.
"""

from __future__ import annotations

from dataclasses import dataclass

from radnode.analyzers.runtime import ModelError, ModelManifest
from radnode.model.hemorrhage import SUBTYPES

ANY = "any"
LABELS: tuple[str, ...] = (ANY, *SUBTYPES)

#: Report names: SEG segment labels, SR tracking identifiers, PDF rows.
DISPLAY: dict[str, str] = {
    ANY: "Intracranial hemorrhage",
    "epidural": "Epidural hemorrhage",
    "subdural": "Subdural hemorrhage",
    "intraparenchymal": "Intraparenchymal hemorrhage",
    "intraventricular": "Intraventricular hemorrhage",
    "subarachnoid": "Subarachnoid hemorrhage",
}

#: SCT 1386000 Intracranial hemorrhage: the study-level "any" finding.
ANY_CODE: tuple[str, str, str] = ("1386000", "SCT", "Intracranial hemorrhage")
#: SCT 50960005 Hemorrhage (CID 7151): segmented property type when the manifest names no code.
HEMORRHAGE_TYPE: tuple[str, str] = ("50960005", "Hemorrhage")


@dataclass(frozen=True)
class Output:
    """Where one clinical label lives in a model: slice-output index, threshold, label value, code."""

    name: str
    slice_index: int
    threshold: float
    #: Segmentation label value (None for "any", which has no channel of its own).
    value: int | None
    #: SNOMED CT (code, meaning) from the manifest's label, if any.
    snomed: tuple[str, str] | None

    @property
    def display(self) -> str:
        return DISPLAY[self.name]

    @property
    def finding_code(self) -> tuple[str, str, str] | None:
        if self.name == ANY:
            return ANY_CODE
        return (self.snomed[0], "SCT", self.snomed[1]) if self.snomed else None


def _label_for(manifest: ModelManifest, subtype: str) -> tuple[int, tuple[str, str] | None] | None:
    """The manifest label of *subtype*: named ``<subtype>`` or ``<subtype> hemorrhage/haemorrhage/hematoma``."""
    for label in manifest.labels:
        first = label.name.strip().lower().replace("-", " ").split(" ")[0]
        if first == subtype:
            return label.value, label.snomed
    return None


def layout_of(manifest: ModelManifest) -> dict[str, Output]:
    """Every clinical label's place in *manifest*; ModelError naming what the model lacks."""
    prefix = f"model {manifest.name} {manifest.version}"
    ct = manifest.ct
    if ct is None:
        raise ModelError(f"{prefix}: is not a slice-classification-segmentation model (no ct: block)")
    if list(manifest.inputs) != ["ct_brain"]:
        raise ModelError(f"{prefix}: inputs must be [ct_brain] for the hemorrhage application (got {manifest.inputs})")
    missing_out = [name for name in LABELS if name not in ct.slice_outputs]
    if missing_out:
        raise ModelError(f"{prefix}: ct.slice_outputs lacks {', '.join(missing_out)} (has {', '.join(ct.slice_outputs)})")
    out: dict[str, Output] = {}
    missing_labels = []
    for name in LABELS:
        value, snomed = None, None
        if name != ANY:
            found = _label_for(manifest, name)
            if found is None:
                missing_labels.append(name)
                continue
            value, snomed = found
            if value == 0:
                raise ModelError(f"{prefix}: label value 0 is background and cannot be {name}")
        out[name] = Output(name, ct.slice_outputs.index(name), float(ct.thresholds[name]), value, snomed)
    if missing_labels:
        raise ModelError(f"{prefix}: labels lack a segmentation label for {', '.join(missing_labels)} "
                         f"(name each '<subtype> hemorrhage', e.g. 'subdural hemorrhage')")
    return out
