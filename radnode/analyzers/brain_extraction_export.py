"""Convert deepbet's two TorchScript nets to ONNX (run once, offline, with torch).

Why: radnode runs brain extraction with onnxruntime only, so the node never
needs torch at run time. deepbet (MIT, https://github.com/wwu-mmll/deepbet)
ships its weights inside its wheel as TorchScript; this script exports them
unchanged (fp32) to ``radnode/models/deepbet/{bbox,mask}.onnx`` and checks the
ONNX outputs against TorchScript on a random input.

Usage::

    pip download --no-deps deepbet==1.0.2 -d /tmp/dl
    pip install torch onnx
    python -m radnode.analyzers.brain_extraction_export /tmp/dl/deepbet-1.0.2-py3-none-any.whl

The ``LICENSE`` next to the ONNX files is copied from the wheel as well.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

OUT_DIR = Path(__file__).resolve().parents[1] / "models" / "deepbet"
#: (member in the wheel, output name, spatial shape deepbet feeds it)
NETS = (
    ("data/models/bbox_model.pt", "bbox.onnx", (128, 128, 128)),
    ("data/models/model.pt", "mask.onnx", (256, 256, 256)),
)


def export(wheel: Path, out_dir: Path = OUT_DIR, *, check: bool = True) -> list[Path]:
    """Export both nets from ``wheel``; returns the written paths."""
    import torch  # only needed here, never at run time

    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    with zipfile.ZipFile(wheel) as zf, tempfile.TemporaryDirectory() as tmp:
        licence = next(n for n in zf.namelist() if n.endswith(".dist-info/LICENSE"))
        (out_dir / "LICENSE").write_bytes(zf.read(licence))
        for member, name, _shape in NETS:
            src = Path(tmp) / Path(member).name
            src.write_bytes(zf.read(member))
            model = torch.jit.load(str(src), map_location="cpu").eval()
            # A small probe keeps the export cheap; the spatial axes are dynamic.
            probe = torch.randn(1, 1, 64, 64, 64)
            dst = out_dir / name
            torch.onnx.export(
                model,
                (probe,),
                str(dst),
                input_names=["image"],
                output_names=["probabilities"],
                dynamic_axes={"image": {2: "x", 3: "y", 4: "z"}, "probabilities": {2: "x", 3: "y", 4: "z"}},
                opset_version=17,
                dynamo=False,
            )
            if check:
                import onnxruntime as ort

                sess = ort.InferenceSession(str(dst), providers=["CPUExecutionProvider"])
                x = torch.randn(1, 1, 96, 96, 96)
                with torch.no_grad():
                    ref = model(x).numpy()
                got = sess.run(None, {"image": x.numpy()})[0]
                err = float(np.abs(ref - got).max())
                print(f"{name}: max |torch - onnx| = {err:.2e}", file=sys.stderr)
                if err > 1e-3:
                    raise SystemExit(f"{name}: ONNX output differs from TorchScript ({err})")
            digest = hashlib.sha256(dst.read_bytes()).hexdigest()
            print(f"{dst} {dst.stat().st_size} bytes sha256={digest}", file=sys.stderr)
            written.append(dst)
    return written


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("wheel", type=Path, help="deepbet-1.0.2-py3-none-any.whl")
    ap.add_argument("--out", type=Path, default=OUT_DIR)
    ap.add_argument("--no-check", action="store_true")
    args = ap.parse_args(argv)
    export(args.wheel, args.out, check=not args.no_check)


if __name__ == "__main__":
    main()
