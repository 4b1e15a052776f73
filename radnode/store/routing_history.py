"""Versions of the routing file edited through the web (history, diff, rollback)."""

from __future__ import annotations

from sqlalchemy import Float, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from radnode.store.db import Base


class RoutingVersionRow(Base):
    __tablename__ = "routing_versions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    created_at: Mapped[float] = mapped_column(Float)
    author: Mapped[str] = mapped_column(String(64))
    text: Mapped[str] = mapped_column(Text)
    comment: Mapped[str] = mapped_column(Text, default="")
