"""radnode runs without its optional dependencies: the ``train`` extra (torch, onnx) and the ``gpu`` extra.

The dependencies are hidden in a fresh interpreter (tests/support/hide_modules.py), not skipped when absent, so
the test means the same on every machine.
"""

from __future__ import annotations

import os
import subprocess
import sys

from tests.support.env import python_path

_PROBE = """
import pkgutil, sys
from tests.support.hide_modules import hide
hide("torch", "onnx", "onnxscript")
import radnode
# Only the training scripts may need the train extra.
TRAINING = ("radnode.analyzers.glioma.train", "radnode.analyzers.brain_extraction_export")
for mod in pkgutil.walk_packages(radnode.__path__, "radnode."):
    if mod.name.endswith(".train") or mod.name in TRAINING or ".migrations." in mod.name:
        continue
    __import__(mod.name)
from radnode.analyzers.runtime import select_providers
print("providers", select_providers(["CUDAExecutionProvider", "CPUExecutionProvider"]))
from radnode.cli import main
try:
    main(["--help"])
except SystemExit as e:
    sys.exit(e.code)
"""


def test_every_runtime_module_and_the_cli_work_without_the_train_extra() -> None:
    res = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": python_path()})
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-4000:]
    assert "analyze" in res.stdout and "serve" in res.stdout  # every command is registered
    # Without onnxruntime-gpu (the gpu extra) a configured CUDA provider falls back to the CPU one.
    assert "providers ['CPUExecutionProvider']" in res.stdout
