"""radnode: a DICOM AI node that sits beside a PACS.

Data flows through the subpackages in this order:
``listener`` (receive and spool) → ``routing`` (rules, series classifier,
selection) → ``queue``/``jobs`` (durable work) → ``analyzers`` (preprocess,
infer, measure) → ``sr_writer`` (SEG, SR, PDF, secondary capture, send back).
"""

from __future__ import annotations

import logging

__version__ = "0.1.0"

#: UID root for every object radnode creates. ``2.25`` is the ISO/ITU-T
#: arc for UUID-derived UIDs (PS3.5 B.2), so no organisational root has to be
#: registered and deterministic UIDs can be derived from job identities.
UID_ROOT = "2.25."

logging.getLogger("radnode").addHandler(logging.NullHandler())
