"""De-identification for external analysis (PS3.15 Annex E basic profile),
with the mapping kept locally so results that come back can be re-identified.
"""

from radnode.deid.files import deidentify_files, node_deidentifier, node_secret, reidentify_file
from radnode.deid.profile import (
    Deidentifier,
    DeidOptions,
    MappingStore,
    SqlMappingStore,
)

__all__ = ["DeidOptions", "Deidentifier", "MappingStore", "SqlMappingStore", "deidentify_files", "node_deidentifier", "node_secret", "reidentify_file"]
