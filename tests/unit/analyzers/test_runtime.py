"""The model runtime on tiny real ONNX models built here (no mocks, no shipped weights).

The segmentation test model is a 1×1×1 Conv3d (channel k of the output
answers input channel k): translation-equivariant with a receptive field of
one voxel, so any correct sliding window must reproduce the whole-volume
result, and padding must not leak into the cropped output.
"""

from __future__ import annotations

import hashlib
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

import onnx
from onnx import TensorProto, helper, numpy_helper

import radnode
from radnode.analyzers.base import AnalyzerError
from radnode.analyzers.runtime import (
    CPU_PROVIDER,
    ModelError,
    ModelStore,
    SessionCache,
    default_cache,
    gaussian_importance,
    load,
    read_manifest,
    resample_like,
    resample_to_spacing,
    select_providers,
    softmax,
    version_key,
)

pytestmark = pytest.mark.timeout(60)

ROLES4 = ["flair", "t1", "t1c", "t2"]
LABELS4 = [
    {"value": 0, "name": "background"},
    {"value": 1, "name": "necrotic tumor core", "snomed": ["6574001", "Necrosis"]},
    {"value": 2, "name": "edema"},
    {"value": 4, "name": "enhancing tumor"},
]


# -- building test models ----------------------------------------------------------------


def conv_model(
    weight: np.ndarray,
    bias: np.ndarray | None = None,
    *,
    spatial: tuple[Any, Any, Any] = ("D", "H", "W"),
    batch: Any = "N",
) -> bytes:
    """A 1×1×1 Conv3d [N, C, D, H, W] → [N, K, D, H, W] with fixed weights (K, C)."""
    k, c = weight.shape
    bias = np.zeros(k, np.float32) if bias is None else bias
    w = numpy_helper.from_array(weight.astype(np.float32).reshape(k, c, 1, 1, 1), "w")
    b = numpy_helper.from_array(bias.astype(np.float32), "b")
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], kernel_shape=[1, 1, 1])
    graph = helper.make_graph(
        [node],
        "conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, c, *spatial])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, k, *spatial])],
        initializer=[w, b],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def classifier_model(weight: np.ndarray) -> bytes:
    """Per-slice classifier [N, C, H, W] → [N, K]: 1×1 conv, global average pool, flatten."""
    k, c = weight.shape
    w = numpy_helper.from_array(weight.astype(np.float32).reshape(k, c, 1, 1), "w")
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["h"], kernel_shape=[1, 1]),
        helper.make_node("GlobalAveragePool", ["h"], ["p"]),
        helper.make_node("Flatten", ["p"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "cls",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", c, "H", "W"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", k])],
        initializer=[w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


IDENTITY4 = np.diag([2.0, 1.0, 3.0, 0.5]).astype(np.float32)


def write_model(folder: Path, data: bytes | None, *, sha: str | None = None, **overrides: Any) -> Path:
    """A model folder: model.onnx (unless *data* is None) and a manifest with the file's sha256."""
    folder.mkdir(parents=True, exist_ok=True)
    if data is not None:
        (folder / "model.onnx").write_bytes(data)
    manifest: dict[str, Any] = {
        "name": "test-unet",
        "version": "0.1.0",
        "task": "segmentation",
        "application": "glioma",
        "inputs": list(ROLES4),
        "spacing_mm": [2.0, 2.0, 2.0],
        "patch_size": [16, 16, 16],
        "normalization": "zscore-brain",
        "output": "logits",
        "labels": LABELS4,
        "intended_use": "tests only",
        "demo": True,
        "license": "Apache-2.0",
        "training": {"data": "none", "epochs": 0},
        "sha256": sha or hashlib.sha256(data or b"").hexdigest(),
    }
    manifest.update(overrides)
    (folder / "manifest.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))
    return folder


def ref_for(folder: Path) -> Any:
    store = ModelStore([folder.parent], builtin_dir=None)
    (ref,) = [r for r in store.available() if r.path == folder]
    return ref


def reference_probs(channels: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """What the 1×1×1 conv + softmax gives on the whole volume, computed in numpy."""
    logits = np.einsum("kc,czyx->kzyx", weight, channels)
    return softmax(logits, axis=0)


@pytest.fixture
def seg_model(tmp_path: Path) -> Any:
    folder = write_model(tmp_path / "models" / "test-unet", conv_model(IDENTITY4))
    return SessionCache(providers=[CPU_PROVIDER], threads=1).get_model(ref_for(folder))


# -- sliding window ----------------------------------------------------------------------


def test_sliding_window_reproduces_whole_volume(seg_model: Any) -> None:
    rng = np.random.default_rng(0)
    channels = rng.normal(size=(4, 40, 37, 45)).astype(np.float32)
    whole = softmax(seg_model.run(channels[None]), axis=1)[0]  # the model has dynamic spatial dims
    np.testing.assert_allclose(whole, reference_probs(channels, IDENTITY4), atol=1e-5)
    for overlap, batch in [(0.5, 1), (0.25, 3), (0.0, 2)]:
        probs = seg_model.predict_volume(channels, overlap=overlap, batch_size=batch)
        assert probs.shape == (4, 40, 37, 45) and probs.dtype == np.float32
        np.testing.assert_allclose(probs, whole, atol=1e-5)
        np.testing.assert_allclose(probs.sum(axis=0), 1.0, atol=1e-5)


def test_small_volume_is_padded_and_cropped_back(tmp_path: Path) -> None:
    # Static [1, 4, 16, 16, 16] input: the runtime must pad, and padding must not leak.
    data = conv_model(IDENTITY4, spatial=(16, 16, 16), batch=1)
    folder = write_model(tmp_path / "m" / "static", data)
    model = load(ref_for(folder), providers=[CPU_PROVIDER])
    assert model.max_batch == 1
    channels = np.random.default_rng(1).normal(size=(4, 5, 9, 20)).astype(np.float32)
    probs = model.predict_volume(channels, batch_size=4)  # clamped to the model's batch of 1
    assert probs.shape == (4, 5, 9, 20)
    np.testing.assert_allclose(probs, reference_probs(channels, IDENTITY4), atol=1e-5)


def test_segment_maps_argmax_to_label_values(seg_model: Any) -> None:
    channels = np.zeros((4, 12, 10, 8), np.float32)
    channels[0] = 1.0  # background everywhere ...
    channels[1, :4] = 5.0  # ... necrosis in the first slices
    channels[2, 4:8] = 5.0  # edema in the middle
    channels[3, 8:] = 5.0  # enhancing (label value 4, channel 3) at the end
    labels = seg_model.segment(channels)
    assert labels.dtype == np.uint8 and labels.shape == (12, 10, 8)
    assert set(np.unique(labels[:4])) == {1}
    assert set(np.unique(labels[4:8])) == {2}
    assert set(np.unique(labels[8:])) == {4}


def test_realistic_volume_is_quick(tmp_path: Path) -> None:
    folder = write_model(tmp_path / "m" / "big", conv_model(IDENTITY4), patch_size=[64, 64, 64])
    model = load(ref_for(folder), providers=[CPU_PROVIDER], threads=1)
    channels = np.random.default_rng(2).normal(size=(4, 96, 112, 96)).astype(np.float32)
    start = time.perf_counter()
    probs = model.predict_volume(channels)
    elapsed = time.perf_counter() - start
    assert probs.shape == (4, 96, 112, 96)
    np.testing.assert_allclose(probs, reference_probs(channels, IDENTITY4), atol=1e-5)
    assert elapsed < 15, f"sliding window took {elapsed:.1f}s"


def test_gaussian_weights_symmetric_and_peak_in_middle() -> None:
    for patch in [(16, 16, 16), (17, 24, 9), (64, 64, 64)]:
        w = gaussian_importance(patch)
        assert w.shape == patch and w.dtype == np.float32
        np.testing.assert_allclose(w, w[::-1, :, :])
        np.testing.assert_allclose(w, w[:, ::-1, :])
        np.testing.assert_allclose(w, w[:, :, ::-1])
        assert w.max() == pytest.approx(1.0, abs=1e-3)
        peak = np.unravel_index(np.argmax(w), w.shape)
        assert all(abs(p - (n - 1) / 2) <= 0.5 for p, n in zip(peak, patch))
        assert w.min() > 0  # floored: never divides by zero
    # sigma = patch / 8 per axis: one sigma from the centre of an odd axis gives exp(-1/2).
    w = gaussian_importance((41, 9, 9))
    profile = w[:, 4, 4] / w[20, 4, 4]
    sigma = 41 / 8
    np.testing.assert_allclose(profile[25], np.exp(-0.5 * (5 / sigma) ** 2), rtol=1e-4)


def test_input_shape_checks(seg_model: Any) -> None:
    with pytest.raises(ModelError, match="expected channels"):
        seg_model.predict_volume(np.zeros((3, 20, 20, 20), np.float32))
    bad = np.zeros((4, 20, 20, 20), np.float32)
    bad[0, 1, 2, 3] = np.nan
    with pytest.raises(ModelError, match="NaN"):
        seg_model.predict_volume(bad)
    with pytest.raises(ModelError, match="channels but the manifest names 4"):
        seg_model.run(np.zeros((1, 3, 8, 8, 8), np.float32))


# -- classification ----------------------------------------------------------------------


def test_classifier_run_and_predict(tmp_path: Path) -> None:
    weight = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], np.float32)
    folder = write_model(
        tmp_path / "m" / "hemorrhage-slices",
        classifier_model(weight),
        name="hemorrhage-slices",
        task="classification",
        application="hemorrhage",
        inputs=["ct-brain", "ct-subdural"],
        spacing_mm=None,
        patch_size=None,
        normalization="ct-windows",
        labels=[{"value": 0, "name": "none"}, {"value": 1, "name": "any"}, {"value": 2, "name": "subdural"}],
    )
    model = load(ref_for(folder), providers=[CPU_PROVIDER])
    slices = np.random.default_rng(3).normal(size=(5, 2, 32, 32)).astype(np.float32)
    raw = model.run(slices)
    assert raw.shape == (5, 3)
    np.testing.assert_allclose(raw, slices.mean(axis=(2, 3)) @ weight.T, atol=1e-5)
    np.testing.assert_allclose(model.predict(slices).sum(axis=1), 1.0, atol=1e-5)
    with pytest.raises(ModelError, match="the network takes"):
        model.run(np.zeros((5, 2, 32), np.float32))
    with pytest.raises(ModelError, match="segmentation model"):
        model.predict_volume(np.zeros((2, 8, 8, 8), np.float32))


# -- errors an admin can act on --------------------------------------------------------------


def test_sha256_mismatch(tmp_path: Path) -> None:
    folder = write_model(tmp_path / "m" / "test-unet", conv_model(IDENTITY4), sha="ab" * 32)
    with pytest.raises(ModelError) as exc:
        load(ref_for(folder))
    msg = str(exc.value)
    assert msg.startswith("model test-unet 0.1.0: model.onnx sha256 mismatch (file changed or corrupt): expected abab")
    assert hashlib.sha256((folder / "model.onnx").read_bytes()).hexdigest() in msg
    assert isinstance(exc.value, AnalyzerError)  # fails the job once instead of retrying


@pytest.mark.parametrize("corrupt", ["truncated", "garbage"])
def test_corrupt_onnx_file(tmp_path: Path, corrupt: str) -> None:
    good = conv_model(IDENTITY4)
    data = good[: len(good) // 2] if corrupt == "truncated" else b"this is not a network\x00\xff" * 10
    folder = write_model(tmp_path / "m" / "test-unet", data)  # manifest pins the corrupt bytes
    with pytest.raises(ModelError, match=r"^model test-unet 0\.1\.0: model\.onnx is not a valid ONNX file: "):
        load(ref_for(folder))


def test_missing_model_file(tmp_path: Path) -> None:
    folder = write_model(tmp_path / "m" / "test-unet", None, sha="cd" * 32)
    with pytest.raises(ModelError, match=r"^model test-unet 0\.1\.0: model\.onnx is missing from "):
        load(ref_for(folder))


def test_manifest_names_fewer_inputs_than_the_model_takes(tmp_path: Path) -> None:
    folder = write_model(tmp_path / "m" / "test-unet", conv_model(IDENTITY4), inputs=["flair", "t1", "t1c"])
    with pytest.raises(ModelError) as exc:
        load(ref_for(folder))
    assert str(exc.value) == (
        "model test-unet 0.1.0: the network expects 4 input channels but the manifest names 3 inputs (flair, t1, t1c)"
    )


def test_output_channels_must_match_labels(tmp_path: Path) -> None:
    folder = write_model(tmp_path / "m" / "test-unet", conv_model(IDENTITY4), labels=LABELS4[:3])
    with pytest.raises(ModelError, match="produces 4 output channels but the manifest lists 3 labels"):
        load(ref_for(folder))


def test_static_patch_must_match_manifest(tmp_path: Path) -> None:
    data = conv_model(IDENTITY4, spatial=(32, 16, 16))
    folder = write_model(tmp_path / "m" / "test-unet", data, patch_size=[16, 16, 16])
    with pytest.raises(ModelError, match=r"expects patches of \[32, 16, 16\] \(z, y, x\)"):
        load(ref_for(folder))
    # (x, y, z) = (16, 16, 32) is the same patch, written the manifest's way round.
    folder2 = write_model(tmp_path / "m2" / "test-unet", data, patch_size=[16, 16, 32])
    assert load(ref_for(folder2)).manifest.patch_zyx == (32, 16, 16)


def test_unknown_manifest_key(tmp_path: Path) -> None:
    folder = write_model(tmp_path / "m" / "test-unet", conv_model(IDENTITY4), colour="red")
    ref = ref_for(folder)
    assert not ref.usable and "unknown key 'colour'" in (ref.error or "")
    with pytest.raises(ModelError, match=r"manifest\.yaml is invalid: unknown key 'colour' \(allowed keys: name, "):
        load(ref)
    # find() says why the model the admin asked for is not there.
    with pytest.raises(ModelError, match="unknown key 'colour'"):
        ModelStore([folder.parent], builtin_dir=None).find(name="test-unet")


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ({"spacing_mm": [2.0, 0.0, 2.0]}, "spacing_mm: every spacing must be a positive number"),
        ({"patch_size": [64, 4, 64]}, "patch_size: every patch dimension must be at least 8"),
        ({"labels": [{"value": 0, "name": "bg"}, {"value": 0, "name": "tumor"}]}, "label values must be unique"),
        ({"labels": [{"value": 1, "name": "tumor"}]}, "must have a label with value 0"),
        ({"labels": [{"value": 0, "name": "bg", "color": "red"}]}, "unknown key 'labels[0].color'"),
        ({"sha256": "abc123"}, "sha256: must be the 64 hexadecimal characters"),
        ({"inputs": []}, "inputs: must name at least one input role"),
        ({"inputs": ["t1", "t1"]}, "inputs: input roles must be unique (repeated: t1)"),
        ({"version": "latest"}, "version: 'latest' is not a version"),
        ({"task": "detection"}, "task: Input should be 'segmentation', 'classification' or 'slice-classification-segmentation'"),
        ({"patch_size": None}, "patch_size: required for segmentation models"),
    ],
)
def test_manifest_validation_names_the_field(tmp_path: Path, override: dict[str, Any], expected: str) -> None:
    folder = write_model(tmp_path / "m", b"x", **override)
    with pytest.raises(ModelError) as exc:
        read_manifest(folder)
    assert expected in str(exc.value)
    assert str(exc.value).startswith(f"model folder {folder}: manifest.yaml is invalid: ")


def test_missing_manifest_key(tmp_path: Path) -> None:
    folder = write_model(tmp_path / "m", b"x")
    raw = yaml.safe_load((folder / "manifest.yaml").read_text())
    del raw["sha256"]
    (folder / "manifest.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(ModelError, match="missing required key 'sha256'"):
        read_manifest(folder)


# -- discovery ----------------------------------------------------------------------------


def test_store_lists_broken_folders_and_finds_latest(tmp_path: Path) -> None:
    root = tmp_path / "site"
    data = conv_model(IDENTITY4)
    write_model(root / "unet-0.9", data, version="0.9.0")
    write_model(root / "unet-0.10", data, version="0.10.0")
    write_model(root / "unet-0.11rc", data, version="0.11.0-rc.1")
    write_model(root / "other", data, name="mets-unet", application="metastasis", version="2.0.0")
    broken = root / "broken"
    broken.mkdir()
    (broken / "manifest.yaml").write_text("name: [unclosed\n")
    notyaml_map = root / "list"
    notyaml_map.mkdir()
    (notyaml_map / "manifest.yaml").write_text("- a\n- b\n")
    (root / "not-a-model").mkdir()  # no manifest: ignored

    store = ModelStore([root, tmp_path / "does-not-exist"], builtin_dir=None)
    refs = {r.path.name: r for r in store.available()}
    assert set(refs) == {"unet-0.9", "unet-0.10", "unet-0.11rc", "other", "broken", "list"}
    assert "is not valid YAML" in (refs["broken"].error or "")
    assert "must be a mapping" in (refs["list"].error or "")
    assert store.find(name="test-unet").version == "0.11.0-rc.1"  # pre-release 0.11 > 0.10
    assert store.find(name="test-unet", version="0.9.0").path.name == "unet-0.9"
    assert store.find(application="metastasis").name == "mets-unet"
    assert store.find().name == "mets-unet"  # 2.0.0 is the latest overall
    with pytest.raises(ModelError, match="no usable model with name 'nope'.*analyzers.model_dirs"):
        store.find(name="nope")
    assert version_key("1.10.0") > version_key("1.9.0") > version_key("1.9.0-rc.2") > version_key("1.9.0-rc.1")
    assert version_key("1.2") == version_key("1.2.0") == version_key("1.2.0+build.5")


def test_site_model_overrides_builtin(tmp_path: Path) -> None:
    builtin, site = tmp_path / "builtin", tmp_path / "site"
    data = conv_model(IDENTITY4)
    write_model(builtin / "test-unet", data)
    write_model(builtin / "test-unet-old", data, version="0.0.9")
    write_model(site / "our-validated-build", data)
    store = ModelStore([site], builtin_dir=builtin)
    found = store.find(name="test-unet", version="0.1.0")
    assert found.path == site / "our-validated-build" and not found.builtin
    listed = {r.path: r for r in store.available()}
    assert listed[builtin / "test-unet"].shadowed_by == site / "our-validated-build"
    assert listed[builtin / "test-unet"].builtin and not listed[builtin / "test-unet"].usable
    assert store.find(name="test-unet", version="0.0.9").builtin  # other versions stay available
    # A folder configured directly (not its parent) is one model.
    assert ModelStore([site / "our-validated-build"], builtin_dir=None).find().name == "test-unet"


def test_default_builtin_dir_is_the_package_models_folder() -> None:
    store = ModelStore([])
    assert store.builtin_dir == Path(radnode.__file__).resolve().parent / "models"


# -- sessions and providers -------------------------------------------------------------------


def test_session_cache_returns_the_same_session(tmp_path: Path) -> None:
    folder = write_model(tmp_path / "m" / "test-unet", conv_model(IDENTITY4))
    cache = SessionCache(providers=[CPU_PROVIDER], threads=1)
    ref = ref_for(folder)
    results: list[Any] = []

    def worker() -> None:
        results.append(cache.get_model(ref_for(folder)))

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    first = cache.get_model(ref)
    assert all(r is first for r in results) and len(cache.loaded()) == 1
    assert cache.get_model(ref).session is first.session
    assert SessionCache(providers=[CPU_PROVIDER]).get_model(ref) is not first  # one cache per process
    assert default_cache() is default_cache()


def test_failed_loads_are_not_cached(tmp_path: Path) -> None:
    data = conv_model(IDENTITY4)
    folder = write_model(tmp_path / "m" / "test-unet", None, sha=hashlib.sha256(data).hexdigest())
    cache = SessionCache(providers=[CPU_PROVIDER])
    with pytest.raises(ModelError, match="missing"):
        cache.get_model(ref_for(folder))
    (folder / "model.onnx").write_bytes(data)  # the admin copies the file
    assert cache.get_model(ref_for(folder)).manifest.name == "test-unet"


def test_providers_fall_back_to_cpu(tmp_path: Path) -> None:
    import onnxruntime as ort

    assert select_providers(["NoSuchExecutionProvider"]) == [CPU_PROVIDER]
    assert select_providers(["NoSuchExecutionProvider", CPU_PROVIDER]) == [CPU_PROVIDER]
    folder = write_model(tmp_path / "m" / "test-unet", conv_model(IDENTITY4))
    model = SessionCache(providers=["CUDAExecutionProvider", CPU_PROVIDER]).get_model(ref_for(folder))
    assert model.providers[-1] == CPU_PROVIDER
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        assert model.providers == [CPU_PROVIDER]
    model = load(ref_for(folder), providers=["TensorrtExecutionProvider"])
    assert CPU_PROVIDER in model.providers


# -- resampling ---------------------------------------------------------------------------


def test_resample_to_model_spacing_and_back() -> None:
    import SimpleITK as sitk
    labels = np.zeros((20, 30, 40), np.uint8)  # (z, y, x) at 1 mm
    labels[4:12, 6:20, 10:30] = 2
    labels[12:16, 6:20, 10:30] = 1
    image = sitk.GetImageFromArray(labels)
    image.SetSpacing((1.0, 1.0, 1.0))
    image.SetOrigin((-10.0, 5.0, 3.0))
    coarse = resample_to_spacing(image, (2.0, 2.0, 2.0), sitk.sitkNearestNeighbor)
    assert coarse.GetSize() == (20, 15, 10)
    assert coarse.GetSpacing() == (2.0, 2.0, 2.0)
    assert coarse.GetOrigin() == pytest.approx((-9.5, 5.5, 3.5))  # same field of view, no half-voxel shift
    back = resample_like(coarse, image)
    assert back.GetSize() == image.GetSize() and back.GetOrigin() == image.GetOrigin()
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), labels)  # labels on even boundaries survive
    # Intensities: linear by default, float images keep their type.
    ramp = sitk.GetImageFromArray(np.tile(np.arange(40, dtype=np.float32), (20, 30, 1)))
    coarse_ramp = resample_to_spacing(ramp, (2.0, 1.0, 1.0))
    arr = sitk.GetArrayFromImage(coarse_ramp)
    assert arr.shape == (20, 30, 20)
    np.testing.assert_allclose(arr[0, 0, 1:-1], np.arange(2, 38, 2) + 0.5, atol=1e-5)
