"""Series selection: role probabilities, one series per role, tie-breaks, thresholds, missing roles."""

from __future__ import annotations

import dataclasses

from pydicom.dataset import Dataset

from radnode.routing.classifier import Prediction, load_default
from radnode.routing.corpus import LABELS, generate_corpus
from radnode.analyzers.registry import BUILTIN_APPLICATIONS, GLIOMA, HEMORRHAGE, METASTASIS
from radnode.routing.selection import ApplicationRoles, select_series
from radnode.routing.series_index import SeriesSummary


def _series(uid: str, number: int = 1, acq: str = "2D", thickness: str = "5", count: int = 20, description: str = "") -> SeriesSummary:
    ds = Dataset()
    ds.SeriesNumber = number
    ds.MRAcquisitionType = acq
    ds.SliceThickness = thickness
    ds.SeriesDescription = description
    # readable names instead of UIDs keep the assertions legible
    return dataclasses.replace(SeriesSummary.from_header(ds, instance_count=count), series_instance_uid=uid)


def _pred(**probs: float) -> Prediction:
    full = {label: 0.0 for label in LABELS}
    rest = max(0.0, 1.0 - sum(probs.values()))
    full.update(probs)
    full["other"] = full.get("other", 0.0) + rest
    label = max(full, key=full.__getitem__)
    return Prediction(label=label, probability=full[label], probabilities=full)


def test_builtin_declarations() -> None:
    assert GLIOMA.required == ("t1c", "flair", "t2", "t1")
    assert METASTASIS.required == ("t1c",)
    assert HEMORRHAGE.required == ("ct_brain",)
    assert set(BUILTIN_APPLICATIONS) == {"glioma", "metastasis", "hemorrhage"}


def test_glioma_complete_and_one_series_per_role() -> None:
    summaries = [_series("a", 1), _series("b", 2), _series("c", 3), _series("d", 4), _series("e", 5)]
    predictions = [
        _pred(t1=0.55, t1c=0.44),  # a: top label t1 but also the only real t1c candidate besides e
        _pred(flair=0.97),
        _pred(t2=0.95),
        _pred(t1=0.9),
        _pred(t1c=0.30, t1=0.1),
    ]
    sel = select_series(GLIOMA, summaries, predictions)
    assert sel.complete and not sel.missing
    assert {r: c.series_instance_uid for r, c in sel.chosen.items()} == {"t1c": "a", "flair": "b", "t2": "c", "t1": "d"}
    assert sel.chosen["t1c"].needs_confirmation  # 0.44 < threshold
    assert not sel.chosen["flair"].needs_confirmation
    assert len({c.series_instance_uid for c in sel.chosen.values()}) == len(sel.chosen)


def test_one_series_never_fills_two_roles() -> None:
    summaries = [_series("only")]
    sel = select_series(ApplicationRoles("x", required=("t1", "t1c")), summaries, [_pred(t1=0.5, t1c=0.45)])
    assert list(sel.chosen) == ["t1"]
    assert [m.role for m in sel.missing] == ["t1c"]
    assert not sel.complete
    assert sel.missing[0].closest_candidates == [("only", "", 0.45)]


def test_ties_prefer_3d_then_thinner_then_more_instances_then_later() -> None:
    app = ApplicationRoles("x", required=("t1c",))
    same = _pred(t1c=0.9)
    pick = lambda summaries: select_series(app, summaries, [same] * len(summaries)).chosen["t1c"].series_instance_uid  # noqa: E731
    assert pick([_series("2d", acq="2D", thickness="1"), _series("3d", acq="3D", thickness="1")]) == "3d"
    assert pick([_series("thick", thickness="5"), _series("thin", thickness="1")]) == "thin"
    assert pick([_series("many", count=200), _series("few", count=20)]) == "many"
    assert pick([_series("late", number=9), _series("early", number=3)]) == "late"
    # probability still wins over tie-breaks
    sel = select_series(app, [_series("3d", acq="3D"), _series("2d")], [_pred(t1c=0.7), _pred(t1c=0.8)])
    assert sel.chosen["t1c"].series_instance_uid == "2d"


def test_missing_role_names_closest_candidates() -> None:
    summaries = [_series("a", description="t2_tse_tra"), _series("b", description="localizer")]
    sel = select_series(HEMORRHAGE, summaries, [_pred(t2=0.99, ct_brain=0.01), _pred(localizer=0.99)])
    assert not sel.complete and not sel.chosen
    (missing,) = sel.missing
    assert missing.role == "ct_brain"
    assert missing.closest_candidates[0] == ("a", "t2_tse_tra", 0.01)


def test_empty_study_and_optional_roles() -> None:
    sel = select_series(METASTASIS, [], [])
    assert not sel.complete and {m.role for m in sel.missing} == {"t1c", "flair", "t1"}
    # an optional role does not steal the only candidate of a required one
    sel = select_series(METASTASIS, [_series("x")], [_pred(flair=0.5, t1c=0.4)])
    assert sel.complete and sel.chosen["t1c"].series_instance_uid == "x"


def test_end_to_end_with_shipped_model() -> None:
    clf = load_default()
    items = generate_corpus(seed=4242, studies_per_family=4, families=["ge_classic", "philips_site", "ct_canon"])
    checked = 0
    studies: dict[str, list] = {}
    for item in items:
        studies.setdefault(item.summary.study_instance_uid, []).append(item)
    for study in studies.values():
        labels = {i.label for i in study}
        app = GLIOMA if set(GLIOMA.required) <= labels else HEMORRHAGE if "ct_brain" in labels else None
        if app is None:
            continue
        summaries = [i.summary for i in study]
        sel = select_series(app, summaries, clf.predict(summaries))
        assert sel.complete, sel
        truth = {i.summary.series_instance_uid: i.label for i in study}
        for role, chosen in sel.chosen.items():
            assert truth[chosen.series_instance_uid] == role
        checked += 1
    assert checked >= 3
