"""The shipped demo metastasis model keeps the contract the analyzer is built against.

Why: the analyzer finds the model by application, feeds one z-scored T1c
channel at 1 mm in LAS order through ``predict_volume`` and hands P(lesion)
to the candidate step with the manifest's ``lesions:`` rule; a retrained
model that changed any of that (or was copied incompletely) must fail here,
not on a patient's study. One held-out Colin27 case checks that it still
finds a lesion at all.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import yaml

from radnode.analyzers.metastasis.candidates import find_candidates, rule_from_manifest
from radnode.analyzers.runtime import BUILTIN_MODEL_DIR, CPU_PROVIDER, ModelStore, SessionCache

#: The shipped model as installed (the wheel's copy when the tests run against the installed package).
MODEL = BUILTIN_MODEL_DIR / "metastasis-demo"


@pytest.fixture(scope="module")
def model():  # type: ignore[no-untyped-def]
    ref = ModelStore([]).find(application="metastasis")
    assert ref.builtin and ref.path.resolve() == MODEL.resolve()
    return SessionCache(providers=(CPU_PROVIDER,), threads=2).get_model(ref)


def test_manifest_is_a_labelled_demo_with_a_checked_sha(model) -> None:  # type: ignore[no-untyped-def]
    raw = yaml.safe_load((MODEL / "manifest.yaml").read_text())
    assert hashlib.sha256((MODEL / "model.onnx").read_bytes()).hexdigest() == raw["sha256"]
    assert raw["demo"] is True and "NOT FOR CLINICAL USE" in raw["intended_use"]
    assert "NOT FOR CLINICAL USE" in (MODEL / "MODEL_CARD.md").read_text()
    m = model.manifest
    assert (m.task, m.application, m.inputs, m.orientation, m.normalization, m.output) == (
        "segmentation", "metastasis", ["t1c"], "LAS", "zscore-brain", "logits")
    assert m.spacing_mm == (1.0, 1.0, 1.0)
    assert [(lab.value, lab.name) for lab in m.labels] == [(0, "background"), (1, "metastasis")]
    assert m.labels[1].snomed == ("94225005", "Metastatic malignant neoplasm to brain")
    rule = rule_from_manifest(m)
    assert 0 < rule.grow_threshold <= rule.seed_threshold < 1


@pytest.mark.usefixtures("colin27")
def test_finds_the_largest_lesion_of_a_heldout_colin27_case(model) -> None:  # type: ignore[no-untyped-def]
    from radnode.analyzers.metastasis.data import prepare_case, scanner_like
    from radnode.synth.metastasis import synthesize_metastasis_case

    case = synthesize_metastasis_case(900_000, spacing=1.0, anatomy="colin27", lesions=3)
    p = prepare_case(case, "colin27")
    x = scanner_like(p)  # z-scored in the whole brain, as the analyzer does
    big = max(p.diameters, key=lambda i: p.diameters[i])
    assert p.diameters[big] >= 5.0
    centre = np.rint(np.argwhere(p.labels == big).mean(axis=0)).astype(int)
    lo = np.clip(centre - 32, 0, np.array(x.shape) - 64)
    sl = tuple(slice(a, a + 64) for a in lo)
    prob = model.predict_volume(x[sl][None])[1]
    brain = p.brain[sl]
    lesion_map, cands = find_candidates(np.where(brain, prob, 0.0), brain, (1.0, 1.0, 1.0),
                                        rule_from_manifest(model.manifest))
    assert cands, "no candidate near the largest lesion"
    hit = lesion_map[p.labels[sl] == big]
    assert (hit > 0).mean() > 0.5
