"""`tools/export.py --format darknet`: .weights + .cfg + .names that read back (here, by Darknet's naming) into
the same detections as the checkpoint, with its anchors, masks, scale_x_y and input size; what Darknet cannot
hold (attention blocks, int8, a free input size) is refused before anything is written."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from yolo_attn.inference.detector import Detector
from yolo_attn.inference.export import run_export, synthetic_images
from yolo_attn.models.darknet import read_darknet_cfg
from yolo_attn.utils.checkpoint import load_checkpoint, load_model, save_checkpoint

from .helpers import NAMES, make_checkpoint, write_images, write_own_labels

ROOT = Path(__file__).resolve().parents[2]
CUSTOM_ANCHORS = [[12, 16], [19, 36], [40, 28], [36, 75], [76, 55], [72, 146]]
CUSTOM_MASKS = [[3, 4, 5], [0, 1, 2]]


@pytest.fixture()
def ckpt(tmp_path):
    """phi 0 with custom anchors and masks, trained-for decoding scale_x_y 2.0 (the multi assigner's)."""
    path = make_checkpoint(tmp_path / "plain.pt", phi=0, objectness_bias=0.0, scale_x_y=2.0)
    data = load_checkpoint(path)
    data["meta"]["model"].update(anchors=CUSTOM_ANCHORS, anchor_masks=CUSTOM_MASKS)
    save_checkpoint(data, path)
    return path


def test_darknet_export_reads_back_to_the_same_detections(ckpt, tmp_path, capsys):
    assert run_export(str(ckpt), format="darknet", img_size=160) == 0
    assert "boxes identical" in capsys.readouterr().out  # the parity check read the files back
    out = tmp_path / "plain_darknet" / "plain.weights"
    cfg = read_darknet_cfg(out.with_suffix(".cfg"))
    assert (cfg.width, cfg.height, cfg.scale_x_y, cfg.num_classes) == (160, 160, 2.0, 3)
    assert cfg.anchors == [tuple(a) for a in CUSTOM_ANCHORS] and cfg.anchor_masks == [tuple(m) for m in CUSTOM_MASKS]
    assert out.with_suffix(".names").read_text().split() == NAMES
    assert "letter_box=1" in out.with_suffix(".cfg").read_text().split("[convolutional]")[0]  # as it was trained
    assert "nms_kind" not in out.with_suffix(".cfg").read_text()  # Darknet's default, IoU NMS

    exported = Detector.load(out, backend="torch", precision="fp32")  # .cfg and .names found by their name
    original = Detector.load(ckpt, backend="torch", precision="fp32", img_size=160)
    assert exported.names == NAMES and exported.input_shape == (160, 160)
    # Darknet runs that cfg with its letterbox and its IoU NMS over every class above the threshold, and so do we
    assert (exported.resize, exported.nms, original.resize, original.nms) == (
        "darknet-letterbox", "darknet-iou", "letterbox", "iou")
    exported.resize, exported.nms = "letterbox", "iou"
    images = synthetic_images(3)
    found = 0
    for got, want in zip(exported(images), original(images)):
        assert len(got) == len(want)
        np.testing.assert_array_equal(got.labels, want.labels)
        np.testing.assert_allclose(got.boxes, want.boxes, atol=1e-3)
        found += len(got)
    assert found > 0


def test_darknet_weights_run_as_their_cfg_says_through_conversion_and_exports(tmp_path):
    """Darknet's weights with a cfg like the official one (no letter_box, nms_kind=greedynms) run stretched with
    Darknet's NMS by default, as Darknet runs them; flags override. A checkpoint converted from them, its ONNX
    export and its Darknet export keep that; an ONNX export of the .weights too."""
    from yolo_attn.models import build_model
    from yolo_attn.models.darknet import save_darknet_weights, write_darknet_cfg

    from ..models.helpers import randomize_bn

    torch.manual_seed(0)
    model = randomize_bn(build_model(0, len(NAMES))).eval()
    weights = tmp_path / "obj.weights"
    save_darknet_weights(model, weights)
    write_darknet_cfg(model, weights.with_suffix(".cfg"), 128, 128)
    weights.with_suffix(".names").write_text("\n".join(NAMES) + "\n")
    # every detector compared here runs on the CPU, as onnxruntime does (a GPU's kernels differ in the last bits)
    detector = Detector.load(weights, backend="torch", precision="fp32", conf=0.2, device="cpu")
    assert (detector.resize, detector.nms) == ("stretch", "darknet")
    assert "stretched to the input, Darknet's DIoU NMS" in detector.describe()
    told = Detector.load(weights, backend="torch", precision="fp32", resize="letterbox", nms="iou")
    assert (told.resize, told.nms) == ("letterbox", "iou")

    images = synthetic_images(2)
    want = detector(images)
    assert sum(len(d) for d in want) > 0
    loaded, meta = load_model(weights)
    save_checkpoint({"meta": meta, "model": loaded.state_dict()}, tmp_path / "converted.pt")
    onnx_of_weights = run_export(str(weights), format="onnx", output=str(tmp_path / "w.onnx"), img_size=128)
    assert onnx_of_weights == 0
    assert run_export(str(tmp_path / "converted.pt"), format="darknet", output=str(tmp_path / "dn"),
                      img_size=128) == 0
    text = (tmp_path / "dn" / "converted.weights").with_suffix(".cfg").read_text()
    assert "letter_box" not in text and text.count("nms_kind=greedynms") == 2
    for path, backend in ((tmp_path / "converted.pt", "torch"), (tmp_path / "w.onnx", "onnxruntime"),
                          (tmp_path / "dn" / "converted.weights", "torch")):
        other = Detector.load(path, backend=backend, precision="fp32", conf=0.2, device="cpu")
        assert (other.resize, other.nms) == ("stretch", "darknet"), path
        for got, expected in zip(other(images), want):
            np.testing.assert_array_equal(got.labels, expected.labels)
            np.testing.assert_allclose(got.boxes, expected.boxes, atol=1e-2)


def test_letter_box_weights_keep_darknets_letterbox_through_conversion_and_export(tmp_path):
    """A cfg with letter_box=1 and no nms_kind: Darknet's letterbox and default IoU NMS, kept by the converted
    checkpoint and written again by its Darknet export."""
    from yolo_attn.models import build_model
    from yolo_attn.models.darknet import save_darknet_weights, write_darknet_cfg

    model = build_model(0, len(NAMES)).eval()
    weights = tmp_path / "obj.weights"
    save_darknet_weights(model, weights)
    write_darknet_cfg(model, weights.with_suffix(".cfg"), 128, 128, letter_box=True, nms="iou")
    weights.with_suffix(".names").write_text("\n".join(NAMES) + "\n")
    loaded, meta = load_model(weights)
    save_checkpoint({"meta": meta, "model": loaded.state_dict()}, tmp_path / "converted.pt")
    converted = Detector.load(tmp_path / "converted.pt", backend="torch", precision="fp32")
    assert (converted.resize, converted.nms) == ("darknet-letterbox", "darknet-iou")
    assert run_export(str(tmp_path / "converted.pt"), format="darknet", output=str(tmp_path / "dn"),
                      img_size=128) == 0
    text = (tmp_path / "dn" / "converted.cfg").read_text()
    assert "letter_box=1" in text and "nms_kind" not in text
    again = Detector.load(tmp_path / "dn" / "converted.weights", backend="torch", precision="fp32")
    assert (again.resize, again.nms) == ("darknet-letterbox", "darknet-iou")


def test_a_non_square_cfg_runs_at_its_own_shape_as_darknet_does(tmp_path):
    """width=192 height=96: the network runs on 192x96 inputs, the image stretched to them (Darknet's
    resize_image), boxes scaled back per axis; its ONNX and Darknet exports run at that shape too."""
    from yolo_attn.data.letterbox import stretch
    from yolo_attn.models import build_model, decode_outputs, postprocess
    from yolo_attn.models.darknet import save_darknet_weights, write_darknet_cfg

    from ..models.helpers import randomize_bn

    torch.manual_seed(0)
    model = randomize_bn(build_model(0, len(NAMES))).eval()
    weights = tmp_path / "wide.weights"
    save_darknet_weights(model, weights)
    write_darknet_cfg(model, weights.with_suffix(".cfg"), width=192, height=96)
    weights.with_suffix(".names").write_text("\n".join(NAMES) + "\n")
    # on the CPU, as the fp32 reference below and onnxruntime run
    detector = Detector.load(weights, backend="torch", precision="fp32", conf=0.2, device="cpu")
    assert detector.input_shape == (96, 192) and detector.resize == "stretch"
    image = synthetic_images(1)[0]  # 480x640
    got = detector(image)
    x = torch.from_numpy(stretch(image, (96, 192))[0]).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        decoded = decode_outputs(model(x), model.level_anchors(), scale_x_y=1.05)
    relative = (1 / 192, 1 / 96)  # Darknet's NMS judges boxes as fractions of the image
    expected = postprocess(decoded, 0.2, 0.45, multi_label=True, nms="darknet", nms_scales=[relative])[0]
    assert len(got) == len(expected) > 0
    np.testing.assert_array_equal(got.labels, expected[:, 5].long().numpy())
    scale = [640 / 192, 480 / 96] * 2
    np.testing.assert_allclose(got.boxes, (expected[:, :4].numpy() * scale).clip(0, [640, 480] * 2), atol=1e-3)

    assert run_export(str(weights), format="onnx", output=str(tmp_path / "wide.onnx")) == 0
    onnx_detector = Detector.load(tmp_path / "wide.onnx", backend="onnxruntime", conf=0.2, device="cpu")
    assert onnx_detector.input_shape == (96, 192) and onnx_detector.backend.fixed_shape == (1, 96, 192)
    np.testing.assert_allclose(onnx_detector(image).boxes, got.boxes, atol=1e-2)
    assert run_export(str(weights), format="darknet", output=str(tmp_path / "dn")) == 0
    cfg = read_darknet_cfg(tmp_path / "dn" / "wide.cfg")
    assert (cfg.width, cfg.height, cfg.resize) == (192, 96, "stretch")


def test_the_parity_check_catches_a_wrong_cfg(ckpt, monkeypatch, capsys):
    import yolo_attn.models.darknet as darknet

    real = darknet.darknet_cfg_text  # a cfg that forgets the checkpoint's scale_x_y (2.0): 1.05 is read back
    monkeypatch.setattr(darknet, "darknet_cfg_text", lambda model, w, h, scale, *a, **kw: real(model, w, h, 1.05))
    assert run_export(str(ckpt), format="darknet", img_size=160) == 1
    assert "does not match PyTorch" in capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    (dict(precision="int8"), "darknet export supports fp32, not 'int8'"),
    (dict(dynamic=True), "a Darknet .cfg fixes the input size"),
    (dict(output="model.onnx"), "a Darknet export is a .weights file"),
])
def test_darknet_export_refuses_what_darknet_cannot_hold(ckpt, tmp_path, capsys, args, message):
    if "output" in args:
        args["output"] = str(tmp_path / args["output"])
    assert run_export(str(ckpt), format="darknet", **args) == 1
    assert message in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain.pt"]


def test_a_cfg_or_names_of_the_users_is_not_written_over(ckpt, tmp_path, capsys):
    """--output into a folder of Darknet files: a plain.cfg / plain.names there that this export would change is
    kept, and nothing is written; the same files again (a re-export) are fine, and so is an earlier export's
    unedited cfg (the names there stay protected); the input itself is never the output."""
    folder = tmp_path / "darknet"
    folder.mkdir()
    (folder / "plain.cfg").write_text("[net]\n# the user's own training cfg\n")
    assert run_export(str(ckpt), format="darknet", output=str(folder), img_size=160, no_check=True) == 1
    assert "darknet/plain.cfg exists, and is not what this export writes there" in capsys.readouterr().err
    assert sorted(p.name for p in folder.iterdir()) == ["plain.cfg"]
    assert (folder / "plain.cfg").read_text() == "[net]\n# the user's own training cfg\n"
    (folder / "plain.cfg").unlink()
    (folder / "plain.names").write_text("cat\n")
    assert run_export(str(ckpt), format="darknet", output=str(folder / "plain.weights"), no_check=True) == 1
    assert "darknet/plain.names exists" in capsys.readouterr().err
    (folder / "plain.names").unlink()
    (folder / "plain.cfg").mkdir()
    assert run_export(str(ckpt), format="darknet", output=str(folder), no_check=True) == 1
    assert "darknet/plain.cfg is a folder, where the export's .cfg goes" in capsys.readouterr().err
    assert sorted(p.name for p in folder.iterdir()) == ["plain.cfg"]
    (folder / "plain.cfg").rmdir()
    for _ in range(2):
        assert run_export(str(ckpt), format="darknet", output=str(folder), img_size=160, no_check=True) == 0
    names = folder / "plain.names"
    names.write_bytes(names.read_bytes().replace(b"\n", b"\r\n"))  # a checkout with CRLF line ends: the same
    assert run_export(str(ckpt), format="darknet", output=str(folder), img_size=160, no_check=True) == 0
    # an earlier export, unedited, is replaced whole: at another size, or as the other way to run
    assert run_export(str(ckpt), format="darknet", output=str(folder), img_size=128, resize="stretch",
                      no_check=True) == 0
    assert (read_darknet_cfg(folder / "plain.cfg").width, read_darknet_cfg(folder / "plain.cfg").resize) == (
        128, "stretch")
    (folder / "plain.names").write_text("box\ndisc\nkite\n")  # names the user corrected since: kept
    assert run_export(str(ckpt), format="darknet", output=str(folder), img_size=160, no_check=True) == 1
    assert "darknet/plain.names exists, and is not what this export writes there" in capsys.readouterr().err
    (folder / "plain.names").write_text("\n".join(NAMES) + "\n")
    edited = (folder / "plain.cfg").read_text().replace("batch=64", "batch=32")  # the user's since
    (folder / "plain.cfg").write_text(edited)
    assert run_export(str(ckpt), format="darknet", output=str(folder), img_size=160, no_check=True) == 1
    assert "darknet/plain.cfg exists, and is not what this export writes there" in capsys.readouterr().err
    assert (folder / "plain.cfg").read_text() == edited
    weights = folder / "plain.weights"
    assert run_export(str(weights), format="darknet", output=str(folder), no_check=True) == 1
    assert "would write over the weights being exported" in capsys.readouterr().err


def test_attention_models_are_refused(tmp_path, capsys):
    ckpt = make_checkpoint(tmp_path / "cbam.pt", phi=2)
    assert run_export(str(ckpt), format="darknet") == 1
    assert "Darknet has no layer for its attention blocks" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cbam.pt"]


def test_convert_takes_the_cfg_back_into_a_checkpoint(ckpt, tmp_path):
    assert run_export(str(ckpt), format="darknet", output=str(tmp_path / "dn"), img_size=160, no_check=True) == 0
    weights = tmp_path / "dn" / "plain.weights"
    moved = tmp_path / "elsewhere.cfg"  # not beside the weights: given with --cfg
    weights.with_suffix(".cfg").rename(moved)
    run = subprocess.run([sys.executable, str(ROOT / "tools" / "convert.py"), "--from", "darknet", "--weights",
                          str(weights), "--cfg", str(moved), "--out", str(tmp_path / "back.pt")],  # plain.names beside
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    model, meta = load_model(tmp_path / "back.pt")
    assert meta["scale_x_y"] == 2.0 and meta["img_size"] == 160 and meta["names"] == NAMES
    assert [list(a) for a in model.anchors] == CUSTOM_ANCHORS
    source, _ = load_model(ckpt)
    x = torch.rand(1, 3, 160, 160)
    with torch.no_grad():
        for a, b in zip(model(x), source(x)):
            torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_convert_and_export_store_the_resize_and_nms_they_are_given(ckpt, tmp_path):
    """--resize / --nms of tools/convert.py and tools/export.py become the way the written weights run, where
    they would run their own way (Darknet's cfg here): in the checkpoint, an ONNX export and a Darknet cfg."""
    assert run_export(str(ckpt), format="darknet", output=str(tmp_path / "dn"), img_size=160, no_check=True) == 0
    weights = tmp_path / "dn" / "plain.weights"  # its cfg: letter_box=1, no nms_kind
    convert = [sys.executable, str(ROOT / "tools" / "convert.py"), "--from", "darknet", "--weights", str(weights)]
    for flags, out, way in (([], "own.pt", ("darknet-letterbox", "darknet-iou")),
                            (["--resize", "letterbox", "--nms", "iou"], "ours.pt", ("letterbox", "iou")),
                            (["--nms", "darknet"], "diou.pt", ("darknet-letterbox", "darknet"))):
        run = subprocess.run(convert + flags + ["--out", str(tmp_path / out)], capture_output=True, text=True,
                             timeout=300)
        assert run.returncode == 0, run.stderr
        assert f"{way[0]}, {way[1]} NMS" in run.stdout
        detector = Detector.load(tmp_path / out, backend="torch", precision="fp32")
        assert (detector.resize, detector.nms) == way, flags

    assert run_export(str(weights), format="onnx", output=str(tmp_path / "ours.onnx"), resize="stretch",
                      nms="iou", no_check=True) == 0
    onnx = Detector.load(tmp_path / "ours.onnx", backend="onnxruntime")
    assert (onnx.resize, onnx.nms) == ("stretch", "iou")
    assert run_export(str(ckpt), format="darknet", output=str(tmp_path / "st"), img_size=160, resize="stretch",
                      nms="darknet", no_check=True) == 0
    cfg = read_darknet_cfg(tmp_path / "st" / "plain.cfg")
    assert (cfg.resize, cfg.nms) == ("stretch", "darknet")
    with pytest.raises(ValueError, match="nms must be one of"):
        from yolo_attn.inference.export import export_model

        export_model(ckpt, "onnx", tmp_path / "x.onnx", nms="greedy")


def test_predict_and_eval_take_the_cfg_from_the_command_line(ckpt, tmp_path):
    from yolo_attn.eval.run import run_eval
    from yolo_attn.inference.predict import run_predict

    assert run_export(str(ckpt), format="darknet", output=str(tmp_path / "dn"), img_size=160, no_check=True) == 0
    weights = tmp_path / "dn" / "plain.weights"
    moved = tmp_path / "elsewhere.cfg"
    weights.with_suffix(".cfg").rename(moved)
    names = str(weights.with_suffix(".names"))
    images = write_images(tmp_path / "images" / "val", 2)
    lines = []
    for cfg in (str(moved), None):
        assert run_predict(str(weights), str(images[0]), cfg=cfg, classes_file=names, precision="fp32",
                           project=str(tmp_path / "runs"), log=lines.append) == 0
    described = [line for line in lines if ", input " in line]
    shapes = [line.split(", input ")[1].split(",")[0] for line in described]
    assert shapes == ["160x160", "416x416"]  # without it: the official cfg's, stretched with Darknet's NMS too
    assert ["stretched to the input, Darknet's DIoU NMS" in line for line in described] == [False, True]

    reference = Detector.load(ckpt, backend="torch", precision="fp32", img_size=160, conf=0.3)
    write_own_labels(reference, images, tmp_path / "labels" / "val")
    config = {"format": "yolo", "root": str(tmp_path), "train": ["images/val"], "val": ["images/val"], "names": NAMES}
    kw = dict(metric=["voc07"], conf=0.01, batch_size=2, workers=0, device="cpu", project=tmp_path / "eval")
    darknet = run_eval(str(weights), config, darknet_cfg=moved, **kw)
    original = run_eval(str(ckpt), config, img_size=160, **kw)
    assert darknet["voc07_map50"] == pytest.approx(original["voc07_map50"], abs=1e-6)
    assert 0 < darknet["voc07_map50"] < 1


def test_an_export_beside_darknet_weights_does_not_stand_in_for_them(ckpt, tmp_path):
    """An OpenVINO export of obj.weights froze the cfg and names it was made with; --cfg (or an edited obj.cfg)
    asks for others, so the weights themselves run. int8 names its export instead of guessing."""
    pytest.importorskip("openvino")
    from yolo_attn.inference.export import export_model

    assert run_export(str(ckpt), format="darknet", output=str(tmp_path / "dn"), img_size=160, no_check=True) == 0
    weights = tmp_path / "dn" / "plain.weights"
    export_model(weights, "openvino", log=lambda s: None)  # dn/plain_openvino/plain.xml, at 160 with 2.0
    assert (tmp_path / "dn" / "plain_openvino" / "plain.xml").is_file()
    other = tmp_path / "other.cfg"
    other.write_text(weights.with_suffix(".cfg").read_text().replace("width=160", "width=128")
                     .replace("height=160", "height=128").replace("scale_x_y = 2", "scale_x_y = 1.05"))
    detector = Detector.load(weights, use_exports=True, cfg=other)
    assert detector.backend.name == "torch" and detector.input_shape == (128, 128) and detector.scale_x_y == 1.05
    with pytest.raises(ValueError, match="int8 runs from a calibrated export: make one .* pass the export itself"):
        Detector.load(weights, precision="int8", cfg=other)
