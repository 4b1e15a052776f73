"""The intracranial haemorrhage subtypes, in the one order radnode uses for them.

Why a shared module: the synthetic head CTs (label value = position + 1), the
demo model's segmentation labels and slice outputs, the ``radnode synth
hemorrhage --subtype`` choices and the reports all name the same five
subtypes; one tuple keeps them in step without the live analyzer importing
the data generator.
"""

from __future__ import annotations

SUBTYPES: tuple[str, ...] = ("epidural", "subdural", "intraparenchymal", "intraventricular", "subarachnoid")
