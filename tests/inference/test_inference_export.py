"""ONNX and OpenVINO exports: raw maps within 1e-4 relative of PyTorch, identical boxes after NMS, the meta
carried inside (no config needed), and predict running them with the same pre- and post-processing."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from yolo_attn.data.letterbox import LetterboxInfo
from yolo_attn.data.records import BadImageError
from yolo_attn.inference.detector import Detections, Detector
from yolo_attn.inference.export import (ParityReport, calibration_images, check_parity, export_model, run_export,
                                        synthetic_images)

from .helpers import IMG_SIZE, NAMES, make_checkpoint, write_images, write_own_labels

pytest.importorskip("onnxruntime")
has_openvino = importlib.util.find_spec("openvino") is not None
needs_openvino = pytest.mark.skipif(not has_openvino, reason="openvino not installed (the openvino extra)")
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "ca.pt", phi=4)


def _images():
    return synthetic_images(3)


@pytest.mark.parametrize("phi", [2, 5])  # CBAM and GC: the most varied ops (phi 4, CA, is tested dynamic below)
def test_onnx_parity_static(tmp_path, phi):
    ckpt = make_checkpoint(tmp_path / f"phi{phi}.pt", phi=phi)
    out = export_model(ckpt, "onnx", log=lambda s: None)
    assert out == tmp_path / f"phi{phi}.onnx"
    report = check_parity(ckpt, out, _images())
    assert report.ok(1e-4), report.summary()


def test_onnx_dynamic_runs_other_sizes_and_batches(ckpt, tmp_path):
    out = export_model(ckpt, "onnx", tmp_path / "dyn.onnx", dynamic=True, log=lambda s: None)
    det = Detector.load(out, img_size=160, device="cpu")
    assert det.input_shape == (160, 160) and det.batch_size > 1
    images = _images()
    reference = Detector.load(ckpt, precision="fp32", img_size=160, device="cpu")  # the export is fp32, on the CPU
    for got, want in zip(det(images), reference(images)):  # batched through ONNX Runtime
        assert len(got) == len(want) > 0
        np.testing.assert_array_equal(got.labels, want.labels)
        np.testing.assert_allclose(got.boxes, want.boxes, atol=0.01)
    report = check_parity(ckpt, out, images)
    assert report.ok(1e-4), report.summary()


def test_exported_model_carries_its_meta(ckpt, tmp_path):
    out = export_model(ckpt, "onnx", tmp_path / "m.onnx", log=lambda s: None)
    det = Detector.load(out)
    torch_det = Detector.load(ckpt)
    assert det.names == NAMES and det.input_shape == (IMG_SIZE, IMG_SIZE)
    assert det.level_anchors == torch_det.level_anchors and det.scale_x_y == torch_det.scale_x_y
    assert det.meta["precision"] == "fp32" and det.meta["dynamic"] is False
    assert det.backend.fixed_shape == (1, IMG_SIZE, IMG_SIZE)
    with pytest.raises(ValueError, match="re-export it with --dynamic"):
        Detector.load(out, img_size=160)
    assert len(det(_images())) == 3  # a list through a batch-1 model
    if has_openvino:  # OpenVINO reads the .onnx too, and its meta
        assert Detector.load(out, backend="openvino").names == NAMES


def test_predict_runs_an_onnx_model_with_the_same_results(ckpt, tmp_path):
    from yolo_attn.inference.predict import run_predict

    out = export_model(ckpt, "onnx", tmp_path / "m.onnx", log=lambda s: None)
    image = write_images(tmp_path / "in", 1)[0]
    for weights, name in ((ckpt, "pt"), (out, "onnx")):
        assert run_predict(str(weights), str(image), project=str(tmp_path / "runs"), name=name, save_txt=True,
                           precision="fp32", device="cpu", log=lambda s: None) == 0  # both on the CPU
    pt, onnx = ((tmp_path / "runs" / n / "labels" / f"{image.stem}.txt").read_text() for n in ("pt", "onnx"))
    assert pt.count("\n") > 0
    np.testing.assert_allclose(np.loadtxt(pt.splitlines()), np.loadtxt(onnx.splitlines()), atol=0.02)


def test_export_tool_checks_parity_and_rejects_bad_requests(ckpt, tmp_path, capsys):
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        import export as tool
    finally:
        sys.path.remove(str(ROOT / "tools"))
    assert tool.main(["--weights", str(ckpt), "--output", str(tmp_path / "t.onnx")]) == 0
    assert "boxes identical" in capsys.readouterr().out
    assert tool.main(["--weights", str(ckpt), "--precision", "bf16"]) == 1
    assert "use --format openvino" in capsys.readouterr().err
    assert run_export(str(tmp_path / "t.onnx")) == 1
    assert "already exported" in capsys.readouterr().err
    assert run_export(str(ckpt), opset=11) == 1
    assert "opset 11 is too old" in capsys.readouterr().err
    assert tool.main(["--weights", str(ckpt), "--output", str(tmp_path / "model.xml")]) == 1  # wrote ONNX as .xml
    assert "an ONNX export is a .onnx file" in capsys.readouterr().err and not (tmp_path / "model.xml").exists()
    assert tool.main(["--weights", str(ckpt), "--output", str(tmp_path / "new"), "--no-check"]) == 0  # a folder
    assert (tmp_path / "new" / f"{ckpt.stem}.onnx").is_file()
    assert tool.main(["--weights", str(ckpt), "--precision", "int8", "--calib-count", "0"]) == 1
    assert "--calib-count 0: int8 calibration needs at least 1 image" in capsys.readouterr().err
    assert tool.main(["--weights", str(ckpt), "--img-size", "100"]) == 1
    assert "image size 100: YOLOv4-tiny needs a width and height that are positive multiples of 32 (e.g. 128)" \
        in capsys.readouterr().err


@needs_openvino
def test_openvino_parity_and_bf16_hint(ckpt, tmp_path):
    out = export_model(ckpt, "openvino", tmp_path / "ov", dynamic=True, log=lambda s: None)
    assert out == tmp_path / "ov" / "ca.xml" and out.with_suffix(".bin").is_file()
    report = check_parity(ckpt, out, _images())
    assert report.ok(1e-4), report.summary()
    det = Detector.load(tmp_path / "ov")  # the folder is enough
    assert det.backend.name == "openvino" and det.names == NAMES
    bf16 = export_model(ckpt, "openvino", precision="bf16", log=lambda s: None)
    assert bf16 == ckpt.parent / "ca_openvino_bf16" / "ca.xml"
    det = Detector.load(bf16)
    assert det.backend.precision == "bf16" and len(det(_images()[0])) >= 0


@needs_openvino
def test_pytorch_weights_run_on_other_backends_in_memory(ckpt):
    images = _images()
    reference = Detector.load(ckpt, precision="fp32", device="cpu")(images)  # where the other backends run
    for backend in ("onnxruntime", "openvino"):
        det = Detector.load(ckpt, backend=backend, precision="fp32", device="cpu")
        assert det.backend.name == backend
        for got, want in zip(det(images), reference):
            np.testing.assert_array_equal(got.labels, want.labels)
            np.testing.assert_allclose(got.boxes, want.boxes, atol=0.01)


@needs_openvino
@pytest.mark.skipif(importlib.util.find_spec("nncf") is None, reason="nncf not installed")
def test_int8_openvino_from_a_calibration_folder(ckpt, tmp_path):
    folder = tmp_path / "calib"
    write_images(folder, 3)
    out = export_model(ckpt, "openvino", precision="int8", calib_images=folder, calib_count=3, log=lambda s: None)
    det = Detector.load(out)
    assert det.backend.precision == "int8" and det.meta["precision"] == "int8"
    # quantized: close, not exact (random weights quantize worse than trained ones)
    reference = Detector.load(ckpt, precision="fp32", device="cpu")
    batch, _ = reference.preprocess(_images())
    for got, want in zip(det.forward(batch)[0], reference.forward(batch)[0]):
        assert np.corrcoef(got.numpy().ravel(), want.numpy().ravel())[0, 1] > 0.95
    with pytest.raises(ValueError, match="calibration images"):
        export_model(ckpt, "onnx", precision="int8", log=lambda s: None)


def test_calibration_images_come_from_the_training_split(tmp_path):
    write_images(tmp_path / "images" / "train", 3)
    write_images(tmp_path / "images" / "val", 1, seed=1)
    config = {"format": "yolo", "root": str(tmp_path), "train": ["images/train"], "val": ["images/val"],
              "names": NAMES}
    logs = []
    images = calibration_images(config, count=2, log=logs.append)
    assert len(images) == 2 and all(im.dtype == np.uint8 and im.ndim == 3 for im in images)
    first = cv2.cvtColor(cv2.imread(str(tmp_path / "images" / "train" / "img0.png")), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(images[0], first)  # RGB, from train, evenly spread (first and last)
    (tmp_path / "images" / "train" / "img2.png").write_bytes(b"")  # a training image broken: skipped
    assert len(list(images)) == 1 and logs[-1].startswith("warning: skipping ") and "img2.png" in logs[-1]
    with pytest.raises(ValueError, match="calibration images"):
        calibration_images(None, None)


def test_calibration_images_are_read_when_used_and_an_unreadable_one_is_skipped(tmp_path):
    paths = write_images(tmp_path / "calib", 3)
    logs = []
    images = calibration_images(folder=tmp_path / "calib", log=logs.append)
    assert len(images) == 3 and logs == [f"calibrating on 3 images from {tmp_path / 'calib'}"]
    paths[1].write_bytes(b"not an image")  # broken after the listing: found when read
    got = list(images)
    assert len(got) == 2 and logs[-1].startswith(f"warning: skipping {paths[1]}")
    reported = len(logs)
    assert len(list(images)) == 2 and len(logs) == reported  # a second pass (another quantizer): said once
    np.testing.assert_array_equal(got[1], images[2])
    np.testing.assert_array_equal(images[-1], images[2])
    assert [im.shape for im in images[::2]] == [got[0].shape, got[1].shape]
    with pytest.raises(IndexError):
        images[3]
    with pytest.raises(BadImageError, match=paths[1].name):  # read directly: raised, not skipped
        images[1]
    for path in paths:
        path.write_bytes(b"")
    with pytest.raises(ValueError, match=f"{tmp_path / 'calib'}: no readable images to calibrate with"):
        list(images)


def test_an_exported_model_evaluates_like_the_checkpoint(ckpt, tmp_path):
    """Detector.as_module() lets yolo_attn.eval score an exported model (how int8's mAP cost is measured)."""
    from yolo_attn.data import build_dataset, load_data_config
    from yolo_attn.eval import evaluate

    paths = write_images(tmp_path / "images" / "val", 2)
    write_own_labels(Detector.load(ckpt, conf=0.3), paths, tmp_path / "labels" / "val")
    config = {"format": "yolo", "root": str(tmp_path), "train": ["images/val"], "val": ["images/val"], "names": NAMES}
    dataset = build_dataset(load_data_config(config), "val")
    out = export_model(ckpt, "onnx", tmp_path / "m.onnx", log=lambda s: None)
    scores = []
    for weights in (ckpt, out):
        module = Detector.load(weights, device="cpu").as_module()  # both on the CPU: the same kernels
        assert module.num_classes == len(NAMES)
        result = evaluate(module, dataset, img_size=IMG_SIZE, batch_size=2, metrics=["voc07"], verbose=False)
        scores.append(result["voc07_map50"])
    assert 0 < scores[0] < 1 and scores[0] == pytest.approx(scores[1], abs=1e-6)
    from yolo_attn.eval.run import run_eval  # tools/eval.py takes the export too

    tool = run_eval(out, config, metric=["voc07"], batch_size=2, workers=0, device="cpu", project=tmp_path / "runs")
    assert tool["voc07_map50"] == pytest.approx(scores[1], abs=1e-6)


@needs_openvino
def test_openvino_backends_share_one_core(ckpt, tmp_path):
    """A Core per backend crashed the process later (a SIGCHLD reaching a Python signal handler after one
    of two Cores was freed): every backend uses the process's one Core."""
    from yolo_attn.inference.backends import create_backend

    out = export_model(ckpt, "openvino", tmp_path / "ov", log=lambda s: None)
    first, second = create_backend("openvino", out), create_backend("openvino", out, precision="bf16")
    assert first._core is second._core


@needs_openvino
def test_reading_an_exports_input_size_uses_the_shared_core(ckpt, tmp_path, monkeypatch):
    import openvino as ov

    from yolo_attn.inference.backends import _openvino_core
    from yolo_attn.inference.hardware import fixed_input_size

    out = export_model(ckpt, "openvino", tmp_path / "ov", log=lambda s: None)
    _openvino_core()

    def second_core(*args, **kwargs):
        raise AssertionError("a second ov.Core() was created")

    monkeypatch.setattr(ov, "Core", second_core)
    assert fixed_input_size(out) == (IMG_SIZE, IMG_SIZE)


def _dets(boxes, scores, labels, scale=1.0):
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    return Detections(boxes, np.asarray(scores, np.float32), np.asarray(labels, np.int64),
                      [NAMES[i] for i in labels], (640, 480), letterbox=LetterboxInfo(scale, 0.0, 0.0, (640, 480)))


def test_parity_pairs_boxes_in_any_order_within_input_pixels():
    from yolo_attn.inference.export import _compare_detections

    def compare(ref, out, ref_all=None, out_all=None):
        return _compare_detections(ref, out, box_tol=0.05, score_tol=1e-4, conf=0.25, where="image 0",
                                   ref_all=ref_all and (lambda: ref_all), out_all=out_all and (lambda: out_all))

    a, b = [265.19, 20.34, 454.12, 95.37], [76.94, 0.0, 480.0, 640.0]
    # two scores tied to 1e-6 come out of NMS in the other order: the same detections
    ref = _dets([b, a], [0.30596215, 0.3059613], [2, 0], scale=0.2)
    assert compare(ref, _dets([a, b], [0.30596158, 0.30596092], [0, 2], scale=0.2)) == ""
    # 0.1 px of a 640-pixel photo letterboxed into 128 (scale 0.2) is 0.02 px of the network input
    assert compare(ref, _dets([np.add(b, 0.1), a], [0.30596215, 0.3059613], [2, 0], scale=0.2)) == ""
    # 1 px of the network input is a real difference, and the message says where
    moved = compare(ref, _dets([np.add(b, 5.0), a], [0.30596215, 0.3059613], [2, 0], scale=0.2))
    assert "image 0: PyTorch has a bird box" in moved and "1 input px away" in moved
    # a class that differs is a difference
    assert "PyTorch has a bird box" in compare(ref, _dets([b, a], [0.30596215, 0.3059613], [1, 0], scale=0.2))
    # a box only one side kept: rounding at the threshold, or a real extra box
    assert compare(_dets([a, b], [0.9, 0.25003], [0, 1]), _dets([a], [0.9], [0])) == ""
    assert "PyTorch has a dog box" in compare(_dets([a, b], [0.9, 0.4], [0, 1]), _dets([a], [0.9], [0]))
    # NMS between two overlapping boxes whose scores tie: each side kept the one the other suppressed
    rival = np.add(a, [4, 0, 4, 0])
    both = _dets([a, rival], [0.5000001, 0.5], [0, 0])
    assert compare(_dets([a], [0.5000001], [0]), _dets([rival], [0.5], [0]), both, both) == ""
    # ... but a box that moved is no rival: the other side never computed it
    assert compare(_dets([a], [0.5], [0]), _dets([rival], [0.5], [0]), _dets([a], [0.5], [0]),
                   _dets([rival], [0.5], [0])) != ""
    # ... nor one the other side scored differently
    assert compare(_dets([a], [0.6], [0]), _dets([rival], [0.5], [0]), _dets([a, rival], [0.6, 0.5], [0, 0]),
                   _dets([rival, a], [0.5, 0.3], [0, 0])) != ""


def test_parity_passes_a_correct_export_that_used_to_fail(tmp_path):
    """This checkpoint's export has two detections with scores tied to 1e-6 that swap places after NMS on
    synthetic image 1, which the positional check called 'classes differ'."""
    weights = make_checkpoint(tmp_path / "tied.pt", phi=2, objectness_bias=0.0)
    out = export_model(weights, "onnx", log=lambda s: None)
    report = check_parity(weights, out)
    assert report.ok(), report.summary()
    assert "boxes identical" in report.summary()


def test_export_failure_says_which_check_failed(ckpt, tmp_path, monkeypatch, capsys):
    import yolo_attn.inference.export as export

    boxes_only = ParityReport([2e-6, 3e-6], 4, False, 0.05, "image 1: PyTorch has a cat box ...")
    monkeypatch.setattr(export, "check_parity", lambda *a, **k: boxes_only)
    assert run_export(str(ckpt), output=str(tmp_path / "m.onnx"), log=lambda s: None) == 1
    err = capsys.readouterr().err
    assert "boxes after NMS differ (image 1: PyTorch has a cat box" in err and "relative" not in err
    maps_only = ParityReport([2e-3, 3e-6], 4, True, 0.05, "")
    monkeypatch.setattr(export, "check_parity", lambda *a, **k: maps_only)
    assert run_export(str(ckpt), output=str(tmp_path / "m.onnx"), log=lambda s: None) == 1
    err = capsys.readouterr().err
    assert "raw maps differ by up to 2.00e-03 relative (tolerance 1e-04)" in err and "boxes" not in err


def test_export_into_a_folder_or_onto_a_file_gives_a_file_or_one_line(ckpt, tmp_path, capsys):
    folder = tmp_path / "exports"
    folder.mkdir()
    assert run_export(str(ckpt), output=str(folder), no_check=True, log=lambda s: None) == 0
    assert (folder / "ca.onnx").is_file()
    (tmp_path / "afile").write_text("keep me")
    assert run_export(str(ckpt), output=str(tmp_path / "afile" / "m.onnx"), no_check=True) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is a file, not a folder" in err
    assert (tmp_path / "afile").read_text() == "keep me"


@needs_openvino
def test_choosing_an_export_reads_its_graph_once(ckpt, tmp_path, monkeypatch):
    """The automatic choice needs an export's meta (its weights digest) and its input size, at the default and
    at the checkpoint's size: one read of the graph serves them all, and the backend reads it once to compile."""
    import yolo_attn.inference.backends as backends

    local = tmp_path / "best.pt"
    local.write_bytes(ckpt.read_bytes())
    out = export_model(local, "openvino", log=lambda s: None)
    core, reads = backends._openvino_core(), []

    class CountingCore:
        def read_model(self, path, *args, **kwargs):
            reads.append(Path(path))
            return core.read_model(path, *args, **kwargs)

        def __getattr__(self, name):
            return getattr(core, name)

    monkeypatch.setattr(backends, "_openvino_core", lambda: CountingCore())
    detector = Detector.load(local, use_exports=True)
    assert detector.choice.weights == out and reads == [out, out]
    out.touch()  # a rewritten export (a newer file time) is read afresh
    Detector.load(local, use_exports=True)
    assert reads == [out] * 4
