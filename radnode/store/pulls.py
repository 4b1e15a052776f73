"""Pull requests: a study asked for by accession number and application.

A pull is recorded before the C-MOVE starts, so the router can recognise
the study when it completes (trigger ``pull``, the requested application and
options), and the web page can show its progress and any failure.
"""

from __future__ import annotations

from sqlalchemy import Float, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from radnode.store.db import Base

PULL_STATES = ("finding", "retrieving", "received", "routed", "failed")


class PullRequestRow(Base):
    __tablename__ = "pull_requests"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    accession: Mapped[str] = mapped_column(String(16), index=True)
    application: Mapped[str] = mapped_column(String(64))
    options_json: Mapped[str] = mapped_column(Text, default="{}")
    pacs: Mapped[str] = mapped_column(String(64))
    requested_by: Mapped[str] = mapped_column(String(64))
    study_instance_uid: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    state: Mapped[str] = mapped_column(String(16))
    message: Mapped[str] = mapped_column(Text, default="")
    instances_expected: Mapped[int | None] = mapped_column(Integer, nullable=True)
    instances_received: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)
