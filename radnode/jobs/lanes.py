"""Worker lanes: which consumer threads take which applications.

Why lanes: a consumer handles one job at a time, and a job may run for many
minutes. Message priority orders only the jobs that are *waiting*; it cannot
help an urgent job (haemorrhage) that arrives while every consumer is busy
with a long elective one (glioma). So a worker that serves both kinds gives
the urgent applications consumer threads of their own — the urgent lane —
that never take elective work and are therefore free when an urgent job
comes; the elective lane never takes urgent work either, so it cannot hold
an urgent message behind its running job (a consumer holds one prefetched
message per queue). The price is that the machine may run an urgent job
beside an elective one; ``worker.urgent_concurrency: 0`` turns the lane off
for machines that cannot, and urgent jobs then share the elective consumers
and only go first among the jobs waiting.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Lane:
    """Consumer threads that take the same applications."""

    name: str
    applications: tuple[str, ...]
    threads: int


def plan_lanes(
    applications: Sequence[str],
    urgent: Callable[[str], bool],
    *,
    concurrency: int,
    urgent_concurrency: int,
) -> list[Lane]:
    """The lanes of a worker serving *applications*.

    Urgent and elective applications together: an ``elective`` lane of
    *concurrency* threads and an ``urgent`` lane of *urgent_concurrency*
    threads (none with 0: one ``shared`` lane). Only one kind: one lane of
    that kind with *concurrency* threads.
    """
    if concurrency < 1 or urgent_concurrency < 0:
        raise ValueError("concurrency must be >= 1 and urgent_concurrency >= 0")
    hurry = tuple(a for a in applications if urgent(a))
    calm = tuple(a for a in applications if a not in hurry)
    if not hurry:
        return [Lane("elective", calm, concurrency)] if calm else []
    if not calm:
        return [Lane("urgent", hurry, concurrency)]
    if urgent_concurrency == 0:
        return [Lane("shared", hurry + calm, concurrency)]
    return [Lane("elective", calm, concurrency), Lane("urgent", hurry, urgent_concurrency)]
