"""Coded concepts the SR writers share: standard codes (SCT, DCM, UCUM) and radnode's private scheme.

Why a module of its own: the glioma SR (``sr.py``) and the metastasis
lesion groups (``sr_metastasis.py``, which ``sr.py`` calls) name the same
sites, measurements and units; one table keeps their codes equal.
"""

from __future__ import annotations

import highdicom as hd

from radnode.model.lesion_rows import REGION_SITES as _REGION_CODES

#: Private coding scheme for finding names that have no standard code
#: ("99" prefix: PS3.3 8.2 local schemes).
LOCAL_SCHEME = "99RADNODE"

VOLUME = hd.sr.CodedConcept("118565006", "SCT", "Volume")
DIAMETER = hd.sr.CodedConcept("81827009", "SCT", "Diameter")
MAXIMUM = hd.sr.CodedConcept("56851009", "SCT", "Maximum")
PROBABILITY = hd.sr.CodedConcept("122157", "DCM", "Probability")
AREA = hd.sr.CodedConcept("42798000", "SCT", "Area")
TOTAL = hd.sr.CodedConcept("255619001", "SCT", "Total")
BRAIN = hd.sr.CodedConcept("12738006", "SCT", "Brain")
NEOPLASM = hd.sr.CodedConcept("108369006", "SCT", "Neoplasm")
LESION = hd.sr.CodedConcept("52988006", "SCT", "Lesion")
MORPHOLOGICALLY_ABNORMAL = hd.sr.CodedConcept("49755003", "SCT", "Morphologically Altered Structure")
LONG_AXIS = hd.sr.CodedConcept("103339001", "SCT", "Long Axis")
PERPENDICULAR_AXIS = hd.sr.CodedConcept("131189007", "SCT", "Perpendicular Axis")
FRACTIONAL_CHANGE = hd.sr.CodedConcept("125314", "DCM", "Fractional Change")

UNITS: dict[str, hd.sr.CodedConcept] = {
    "ml": hd.sr.CodedConcept("ml", "UCUM", "milliliter"),
    "mm": hd.sr.CodedConcept("mm", "UCUM", "millimeter"),
    "mm3": hd.sr.CodedConcept("mm3", "UCUM", "cubic millimeter"),
    "mm2": hd.sr.CodedConcept("mm2", "UCUM", "square millimeter"),
    "cm3": hd.sr.CodedConcept("cm3", "UCUM", "cubic centimeter"),
    "%": hd.sr.CodedConcept("%", "UCUM", "percent"),
    "1": hd.sr.CodedConcept("1", "UCUM", "no units"),
    "{probability}": hd.sr.CodedConcept("{probability}", "UCUM", "probability"),
}
LATERALITY: dict[str, hd.sr.CodedConcept] = {
    "left": hd.sr.CodedConcept("7771000", "SCT", "Left"),
    "right": hd.sr.CodedConcept("24028007", "SCT", "Right"),
    "midline": hd.sr.CodedConcept("51440002", "SCT", "Right and left"),
}
#: Coarse regions (glioma's lobes, metastasis regions) → SNOMED CT body structures (model/lesion_rows.py's table).
REGION_SITES: dict[str, hd.sr.CodedConcept] = {
    name: hd.sr.CodedConcept(code, "SCT", meaning) for name, (code, meaning) in _REGION_CODES.items()
}


def unit_code(unit: str) -> hd.sr.CodedConcept:
    """UCUM code for a radnode unit string ("mL" → ``ml``)."""
    if not isinstance(unit, str) or not unit.strip():
        raise ValueError("unit: must be a non-empty UCUM string")
    key = unit.strip()
    return UNITS.get(key.lower() if key.lower() in ("ml", "mm", "mm2", "mm3", "cm3") else key, hd.sr.CodedConcept(key, "UCUM", key))
