"""De-identification for external analysis (PS3.15 Annex E basic profile),
with the mapping kept locally so results that come back can be re-identified.
"""

from radnode.deid.profile import Deidentifier, DeidOptions, MappingStore, SqlMappingStore

__all__ = ["Deidentifier", "DeidOptions", "MappingStore", "SqlMappingStore"]
