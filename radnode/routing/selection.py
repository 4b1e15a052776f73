"""Choose which series of a study fill an application's input roles.

Why not "top label per series": the 2020 platform picked, per class, the series with
the highest probability, with no threshold and nothing stopping one series
from filling two roles. Here:

* a role is filled by the series with the highest probability *for that
  role's label* (``probabilities[role]``), so a series whose top label is
  ``t1`` can still be the best available ``t1c`` candidate;
* the assignment is global (Hungarian algorithm over roles x series), so a
  single series never fills two roles and the total probability is
  maximised;
* ties are broken towards 3D acquisitions, thinner slices, more instances
  and later series numbers (later usually means a repeat after motion);
* a role whose chosen series scores below ``threshold`` is still chosen but
  flagged ``needs_confirmation``; one with no candidate above ``floor`` (or
  no series left) is reported missing, naming the closest candidates so a
  user can see why.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import structlog
from scipy.optimize import linear_sum_assignment

from radnode.model.analysis import ApplicationRoles
from radnode.routing.classifier import Prediction
from radnode.routing.series_index import SeriesSummary

log = structlog.get_logger(__name__)

#: Probability below which a series is not a candidate for a role at all.
DEFAULT_FLOOR = 0.05


@dataclass(frozen=True)
class ChosenSeries:
    series_instance_uid: str
    label: str
    probability: float
    needs_confirmation: bool


@dataclass(frozen=True)
class MissingRole:
    role: str
    #: (series uid, description, probability for this role), best first
    closest_candidates: list[tuple[str, str, float]] = field(default_factory=list)


@dataclass(frozen=True)
class Selection:
    application: str
    chosen: dict[str, ChosenSeries]
    missing: list[MissingRole]
    #: True when every *required* role is chosen (confirmation may still be needed).
    complete: bool

    @property
    def needs_confirmation(self) -> bool:
        return any(c.needs_confirmation for c in self.chosen.values())


def _tie_key(summary: SeriesSummary) -> tuple[float, float, float, float]:
    """Larger is better: 3D, thinner slices, more instances, later series number."""
    from radnode.routing.enhanced import flatten_header

    header = flatten_header(summary.header)  # an enhanced object keeps SliceThickness in Pixel Measures
    try:
        is_3d = 1.0 if str(header.get("MRAcquisitionType", "")).strip().upper() == "3D" else 0.0
    except Exception:
        is_3d = 0.0
    try:
        thickness = float(header.get("SliceThickness"))
        if not math.isfinite(thickness) or thickness <= 0:
            raise ValueError
    except Exception:
        thickness = 1e6
    number = summary.series_number if summary.series_number is not None else -1
    return (is_3d, -thickness, float(summary.instance_count), float(number))


def select_series(
    app_roles: ApplicationRoles,
    summaries: Sequence[SeriesSummary],
    predictions: Sequence[Prediction],
    threshold: float = 0.5,
    floor: float = DEFAULT_FLOOR,
    n_closest: int = 3,
) -> Selection:
    """Assign series to the application's roles; see the module docstring for the rules."""
    if len(summaries) != len(predictions):
        raise ValueError(f"{len(summaries)} series but {len(predictions)} predictions")
    roles = list(app_roles.roles)
    n_series = len(summaries)
    prob = np.zeros((len(roles), n_series))
    for j, pred in enumerate(predictions):
        for i, role in enumerate(roles):
            value = pred.probabilities.get(role, 0.0)
            prob[i, j] = value if math.isfinite(value) else 0.0

    # Tie-breaks as a tiny, strictly ordered bonus: rank of each series by _tie_key.
    order = sorted(range(n_series), key=lambda j: _tie_key(summaries[j]))
    rank = np.zeros(n_series)
    for position, j in enumerate(order):
        rank[j] = position
    bonus = (rank + 1) / (n_series + 1) * 1e-6

    chosen: dict[str, ChosenSeries] = {}
    if n_series and roles:
        # Roles may only take series above the floor; required roles weigh more
        # so an optional role never steals the only candidate of a required one.
        eligible = prob >= floor
        weight = np.array([1.0 if r in app_roles.required else 0.5 for r in roles])[:, None]
        score = np.where(eligible, prob * weight + bonus[None, :], -1.0)
        # Dummy columns let a role stay unassigned at cost 0 instead of taking an ineligible series.
        full = np.hstack([score, np.zeros((len(roles), len(roles)))])
        rows, cols = linear_sum_assignment(full, maximize=True)
        for i, j in zip(rows, cols):
            if j >= n_series or not eligible[i, j]:
                continue
            p = float(prob[i, j])
            chosen[roles[i]] = ChosenSeries(
                series_instance_uid=summaries[j].series_instance_uid,
                label=roles[i],
                probability=p,
                needs_confirmation=p < threshold,
            )

    missing: list[MissingRole] = []
    for i, role in enumerate(roles):
        if role in chosen:
            continue
        ranked = sorted(range(n_series), key=lambda j: (-prob[i, j], -rank[j]))[:n_closest]
        missing.append(
            MissingRole(role, [(summaries[j].series_instance_uid, summaries[j].series_description, float(prob[i, j])) for j in ranked])
        )
    complete = all(role in chosen for role in app_roles.required)
    log.info(
        "series_selected",
        application=app_roles.name,
        chosen={r: c.series_instance_uid for r, c in chosen.items()},
        missing=[m.role for m in missing],
        complete=complete,
    )
    return Selection(application=app_roles.name, chosen=chosen, missing=missing, complete=complete)
