"""An *oracle* head-CT haemorrhage model: a real ONNX graph that obeys the slice-model contract exactly.

Why: the trained demo model arrives later, and a trained model is never exact.
This graph is: wherever the centre slice's brain window shows acute blood
(55–91 HU: brain window 40/80 ≥ 0.68 and subdural window 80/200 ≤ 0.555) it
labels the pixel intraparenchymal haemorrhage, after a 3 × 3 opening that
removes the thin rims linear interpolation leaves along bone; its per-slice
"any" and "intraparenchymal" logits are the max-pool of that mask (±6, i.e.
probability 0.9975 / 0.0025), every other output is −6. So a test knows
exactly which pixels and slices must come back, through the same onnxruntime
session, manifest, sha256 check and batching the real model uses.

It reads only the centre slice of its neighbour stack, in the contract's
offset-major order (offset −c … +c, each brain, subdural, bone): fed in any
other order it sees no blood, so a channel-order mistake fails the tests.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import yaml
from onnx import TensorProto, helper, numpy_helper

SLICE_OUTPUTS = ("any", "epidural", "subdural", "intraparenchymal", "intraventricular", "subarachnoid")
#: Label value of each segmentation channel (the contract: 0 background, 1..5 in this order).
LABELS = (
    {"value": 0, "name": "background"},
    {"value": 1, "name": "epidural hemorrhage"},
    {"value": 2, "name": "subdural hemorrhage", "snomed": ["35486000", "Subdural intracranial hemorrhage"]},
    {"value": 3, "name": "intraparenchymal hemorrhage", "snomed": ["274100004", "Cerebral hemorrhage"]},
    {"value": 4, "name": "intraventricular hemorrhage"},
    {"value": 5, "name": "subarachnoid hemorrhage", "snomed": ["21454007", "Subarachnoid intracranial hemorrhage"]},
)
WINDOWS = ((40.0, 80.0), (80.0, 200.0), (600.0, 2800.0))
#: HU band the oracle calls acute blood, as window values (see the module docstring).
BRAIN_MIN, SUBDURAL_MAX = 0.68, 0.555
LOGIT = 6.0
IPH = 3  # the label the oracle paints


def oracle_graph(*, context: int = 1, size: int | None = 256, logit: float = LOGIT) -> bytes:
    """The ONNX model bytes: input ``input`` [N, 3(2c+1), H, W] → ``seg_logits`` [N, 6, H, W], ``slice_logits`` [N, 6].

    *logit*: the ± logit of the answers. At 6 every pixel leaks 1.2 % of bleed probability
    (five labels at −6 beside background at 0), which a soft-area reading sums over the whole
    brain; 12 is a confident model (3·10⁻⁵ a pixel).
    """
    channels = 3 * (2 * context + 1)
    hw: list[Any] = [size, size] if size else ["H", "W"]
    centre = 3 * context
    inits = [
        numpy_helper.from_array(np.array([centre], np.int64), "i_brain"),
        numpy_helper.from_array(np.array([centre + 1], np.int64), "i_subdural"),
        numpy_helper.from_array(np.array(BRAIN_MIN, np.float32), "t_brain"),
        numpy_helper.from_array(np.array(SUBDURAL_MAX, np.float32), "t_subdural"),
        numpy_helper.from_array(np.array(2 * logit, np.float32), "two_logit"),
        numpy_helper.from_array(np.array(logit, np.float32), "logit"),
        numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
    ]
    n = helper.make_node
    pool = {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}
    nodes = [
        n("Gather", ["input", "i_brain"], ["brain"], axis=1),
        n("Gather", ["input", "i_subdural"], ["subdural"], axis=1),
        n("GreaterOrEqual", ["brain", "t_brain"], ["hot"]),
        n("LessOrEqual", ["subdural", "t_subdural"], ["not_bone"]),
        n("And", ["hot", "not_bone"], ["band_b"]),
        n("Cast", ["band_b"], ["band"], to=TensorProto.FLOAT),
        # opening: erosion = −maxpool(−x), then dilation = maxpool
        n("Neg", ["band"], ["neg"]),
        n("MaxPool", ["neg"], ["neg_max"], **pool),
        n("Neg", ["neg_max"], ["eroded"]),
        n("MaxPool", ["eroded"], ["blood"], **pool),
        # seg logits: background 0, intraparenchymal ±LOGIT, every other label −LOGIT
        n("Mul", ["blood", "zero"], ["zeros"]),
        n("Mul", ["blood", "two_logit"], ["b2"]),
        n("Sub", ["b2", "logit"], ["iph"]),
        n("Sub", ["zeros", "logit"], ["off"]),
        n("Concat", ["zeros", "off", "off", "iph", "off", "off"], ["seg_logits"], axis=1),
        # slice logits: max-pool of the mask
        n("GlobalMaxPool", ["blood"], ["gmax"]),
        n("Flatten", ["gmax"], ["any01"]),
        n("Mul", ["any01", "two_logit"], ["a2"]),
        n("Sub", ["a2", "logit"], ["any_logit"]),
        n("Mul", ["any01", "zero"], ["z1"]),
        n("Sub", ["z1", "logit"], ["off1"]),
        n("Concat", ["any_logit", "off1", "off1", "any_logit", "off1", "off1"], ["slice_logits"], axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "hemorrhage-oracle",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", channels, *hw])],
        [helper.make_tensor_value_info("seg_logits", TensorProto.FLOAT, ["N", 6, *hw]),
         helper.make_tensor_value_info("slice_logits", TensorProto.FLOAT, ["N", 6])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def oracle_manifest(data: bytes, *, context: int = 1, size: int = 256, in_plane_mm: float = 1.0,
                    **overrides: Any) -> dict[str, Any]:
    """The contract's manifest for *data* (sha256 computed), with *overrides* applied on top."""
    manifest: dict[str, Any] = {
        "name": "hemorrhage-oracle",
        "version": "0.1.0",
        "task": "slice-classification-segmentation",
        "application": "hemorrhage",
        "inputs": ["ct_brain"],
        "normalization": "ct-windows",
        "output": "logits",
        "ct": {
            "in_plane_mm": in_plane_mm,
            "in_plane_size": size,
            "context_slices": context,
            "windows": [list(w) for w in WINDOWS],
            "slice_outputs": list(SLICE_OUTPUTS),
            "thresholds": {name: 0.5 for name in SLICE_OUTPUTS},
        },
        "labels": [dict(label) for label in LABELS],
        "intended_use": "Tests only: a deterministic oracle, not a trained model. DEMO - NOT FOR CLINICAL USE.",
        "demo": True,
        "license": "Apache-2.0",
        "training": {"data": "none: fixed weights (tests/support/hemorrhage_oracle.py)"},
        "sha256": hashlib.sha256(data).hexdigest(),
    }
    manifest.update(overrides)
    return manifest


def write_oracle_model(folder: Path, *, context: int = 1, size: int = 256, data: bytes | None = None,
                       **overrides: Any) -> Path:
    """A model folder (``model.onnx`` + ``manifest.yaml``) holding the oracle; returns *folder*."""
    folder.mkdir(parents=True, exist_ok=True)
    data = oracle_graph(context=context, size=size) if data is None else data
    (folder / "model.onnx").write_bytes(data)
    manifest = oracle_manifest(data, context=context, size=size, **overrides)
    (folder / "manifest.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))
    return folder
