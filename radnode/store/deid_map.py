"""The de-identification map: pseudonym → original, kept in the node's own database and never sent.

The table lives with the other tables (migrations see every model from ``store``); :mod:`radnode.deid` reads
and writes it.
"""

from __future__ import annotations

from sqlalchemy import Float, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from radnode.store.db import Base


class DeidMapRow(Base):
    __tablename__ = "deid_map"

    kind: Mapped[str] = mapped_column(String(32), primary_key=True)
    pseudonym: Mapped[str] = mapped_column(String(128), primary_key=True)
    original: Mapped[str] = mapped_column(Text)
    created_at: Mapped[float] = mapped_column(Float)
