"""The shipped demo haemorrhage model keeps the contract the analyzer is built against.

Why: the analyzer reads ``ct:`` from the manifest and feeds ``input`` [N, 3·(2c+1), H, W]
(offset-major windows, edge slices replicated); a retrained model that changed a name, a
shape or the channel order would fail only at run time.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import yaml

from radnode.analyzers.hemorrhage.train import choose_thresholds, count_subtypes, stack_context

MODEL = Path(__file__).resolve().parents[3] / "radnode" / "models" / "hemorrhage-demo"


def test_context_is_offset_major_with_replicated_edges() -> None:
    w = np.arange(4)[:, None, None, None] * 10 + np.arange(3)[None, :, None, None]  # slice*10 + window
    w = np.broadcast_to(w, (4, 3, 2, 2)).astype(np.float32)
    x = stack_context(w, 1)
    assert x.shape == (4, 9, 2, 2)
    assert x[0, :, 0, 0].tolist() == [0, 1, 2, 0, 1, 2, 10, 11, 12]  # first slice: below replicated
    assert x[2, :, 0, 0].tolist() == [10, 11, 12, 20, 21, 22, 30, 31, 32]
    assert x[3, :, 0, 0].tolist() == [20, 21, 22, 30, 31, 32, 30, 31, 32]


def test_thresholds_separate_studies() -> None:
    sp = np.array([[0.9] * 6, [0.2] * 6, [0.7] * 6])
    st = np.array([[True] * 6, [False] * 6, [True] * 6])
    th = choose_thresholds(sp, st, sp, st)
    assert all(0.2 < v <= 0.7 for v in th.values())


def test_the_threshold_sits_in_the_middle_of_the_gap() -> None:
    """Normals reach 0.3, bleeds start at 0.8: every value between separates them; the middle is taken."""
    sp = np.array([[0.1] * 6, [0.3] * 6, [0.8] * 6, [0.95] * 6])
    st = np.array([[False] * 6, [False] * 6, [True] * 6, [True] * 6])
    th = choose_thresholds(sp, st, sp, st)
    assert all(abs(v - 0.555) < 0.011 for v in th.values()), th


def test_subtype_calls_follow_the_analyzers_rule() -> None:
    th = {"any": 0.5, "epidural": 0.5, "subdural": 0.5, "intraparenchymal": 0.5, "intraventricular": 0.5,
          "subarachnoid": 0.5}
    truth = np.array([True, False, True, False, False, False])
    rows = [
        (np.array([0.9, 0.1, 0.9, 0.0, 0.0, 0.0]), truth, np.array([0.0, 5.0, 0.0, 0.0, 0.0])),   # subdural right
        (np.array([0.9, 0.8, 0.9, 0.0, 0.0, 0.0]), truth, np.array([0.2, 5.0, 0.0, 0.0, 0.0])),   # + a small epidural
        (np.array([0.4, 0.0, 0.9, 0.0, 0.0, 0.0]), truth, np.array([0.0, 5.0, 0.0, 0.0, 0.0])),   # no "any": nothing
    ]
    assert count_subtypes(rows, th, 0.0) == (2, 1)
    assert count_subtypes(rows, th, 0.25) == (2, 0)     # the epidural is under the reporting volume
    assert count_subtypes(rows, th, 10.0) == (0, 0)


def test_manifest_and_onnx_agree() -> None:
    import onnxruntime as ort

    man = yaml.safe_load((MODEL / "manifest.yaml").read_text())
    onnx = (MODEL / "model.onnx").read_bytes()
    assert hashlib.sha256(onnx).hexdigest() == man["sha256"]
    assert man["demo"] is True and "NOT FOR CLINICAL USE" in man["intended_use"]
    ct = man["ct"]
    assert ct["slice_outputs"] == ["any", "epidural", "subdural", "intraparenchymal", "intraventricular",
                                   "subarachnoid"]
    assert set(ct["thresholds"]) == set(ct["slice_outputs"])
    assert [lab["value"] for lab in man["labels"]] == list(range(6))
    sess = ort.InferenceSession(onnx, providers=["CPUExecutionProvider"])
    c = 3 * (2 * ct["context_slices"] + 1)
    n = ct["in_plane_size"]
    seg, cls = sess.run(["seg_logits", "slice_logits"], {"input": np.zeros((2, c, n, n), np.float32)})
    assert seg.shape == (2, 6, n, n) and cls.shape == (2, 6)
