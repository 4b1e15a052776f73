"""The series types the classifier knows, in the order of its output columns.

Kept apart from the training corpus (``radnode.routing.corpus``) so the
live node imports no data generator.
"""

from __future__ import annotations

LABELS: tuple[str, ...] = ("t1", "t1c", "t2", "flair", "dwi", "adc", "swi", "localizer", "ct_brain", "other")
