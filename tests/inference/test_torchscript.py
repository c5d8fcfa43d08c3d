"""TorchScript exports (tools/export.py --format torchscript): the traced model matches PyTorch at any size and
batch, carries its meta, runs in predict and eval like the checkpoint, and bad files or requests get one clear
line."""
from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest
import torch

from yolo_attn.inference.backends import TorchScriptBackend
from yolo_attn.inference.detector import Detector
from yolo_attn.inference.export import check_parity, export_model, run_export, synthetic_images
from yolo_attn.utils.checkpoint import load_model

from .helpers import IMG_SIZE, NAMES, make_checkpoint, run_predict_tool, write_images, write_own_labels


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "gc.pt", phi=5)


@pytest.fixture(scope="module")
def exported(ckpt):
    return export_model(ckpt, "torchscript", log=lambda s: None)


def test_export_lands_beside_the_weights_and_matches_pytorch_at_any_size(ckpt, exported):
    assert exported == ckpt.with_suffix(".torchscript")
    assert check_parity(ckpt, exported, synthetic_images(3)).ok(1e-4)
    model, _ = load_model(ckpt)
    backend = TorchScriptBackend(exported)
    for shape in ((2, IMG_SIZE, IMG_SIZE), (1, 96, 160), (3, 64, 64)):  # the trace recorded no size or batch
        x = torch.rand(shape[0], 3, *shape[1:])
        with torch.no_grad():
            want = model(x)
        for got, ref in zip(backend(x), want):
            assert got.shape == ref.shape
            assert float((got - ref).abs().max() / ref.abs().max()) < 1e-4


def test_the_export_carries_its_meta_and_runs_as_the_checkpoint(ckpt, exported):
    with zipfile.ZipFile(exported) as archive:  # readable by LibTorch and any zip tool: extra/yolo_attn.json
        meta = json.loads(archive.read(next(n for n in archive.namelist() if n.endswith("extra/yolo_attn.json"))))
    assert meta["names"] == NAMES and meta["dynamic"] and meta["exported_from"] == ckpt.name
    detector = Detector.load(exported, conf=0.2, device="cpu")
    reference = Detector.load(ckpt, conf=0.2, device="cpu", backend="torch", precision="fp32")
    assert detector.backend.name == "torchscript" and detector.input_shape == reference.input_shape
    assert "torchscript fp32 (channels-last) on cpu" in detector.describe()
    images = synthetic_images(2)
    for got, want in zip(detector(images), reference(images)):
        assert len(got) == len(want) > 0
        np.testing.assert_array_equal(got.labels, want.labels)
        np.testing.assert_allclose(got.boxes, want.boxes, atol=0.01)
    assert Detector.load(exported, backend="torch", device="cpu").backend.name == "torchscript"  # torch runs it
    with pytest.raises(ValueError, match=r"a \.torchscript model runs with --backend torchscript, not onnxruntime"):
        Detector.load(exported, backend="onnxruntime")
    with pytest.raises(ValueError, match="fp16 runs on CUDA; on a CPU a TorchScript export runs in fp32"):
        Detector.load(exported, precision="fp16", device="cpu")


def test_predict_and_eval_run_the_export_as_the_checkpoint(ckpt, exported, tmp_path):
    from yolo_attn.eval.run import run_eval

    paths = write_images(tmp_path / "images" / "val", 2)
    write_own_labels(Detector.load(ckpt, conf=0.3, device="cpu"), paths, tmp_path / "labels" / "val")
    config = {"format": "yolo", "root": str(tmp_path), "train": ["images/val"], "val": ["images/val"], "names": NAMES}
    scores = [run_eval(w, config, metric=["voc07"], batch_size=2, workers=0, device="cpu", project=tmp_path / "e",
                       name=w.suffix[1:])["voc07_map50"] for w in (ckpt, exported)]
    assert 0 < scores[0] < 1 and scores[1] == pytest.approx(scores[0], abs=1e-6)
    runs = tmp_path / "runs"
    for weights, name in ((ckpt, "pt"), (exported, "ts")):
        assert run_predict_tool(weights, paths[0], runs, "--save-txt", "--name", name, "--device", "cpu",
                                "--backend", "torch", "--precision", "fp32") == 0
    assert (runs / "pt/labels/img0.txt").read_text() == (runs / "ts/labels/img0.txt").read_text() != ""


def test_bad_files_and_requests_get_one_line(ckpt, exported, tmp_path, capsys):
    torn = tmp_path / "torn.torchscript"
    torn.write_bytes(exported.read_bytes()[: 100_000])
    with pytest.raises(ValueError, match=f"{torn}: not a TorchScript file torch can read"):
        Detector.load(torn)
    assert run_predict_tool(torn, tmp_path, tmp_path / "runs") == 1
    assert f"{torn}: not a TorchScript file torch can read" in capsys.readouterr().err
    with pytest.raises(ValueError, match="an exported model .*TorchScript.* is not a checkpoint"):
        load_model(exported)  # training or converting from it: the checkpoint is what carries weights
    assert run_export(str(exported), "onnx") == 1
    assert "is already exported" in capsys.readouterr().err
    assert run_export(str(ckpt), "torchscript", precision="int8") == 1
    assert "torchscript export supports fp32, not 'int8'" in capsys.readouterr().err
    assert run_export(str(ckpt), "torchscript", output=str(tmp_path / "model.pt")) == 1
    assert "a TorchScript export is a .torchscript file" in capsys.readouterr().err
    assert not (tmp_path / "model.pt").exists()
    folder = tmp_path / "out"
    folder.mkdir()
    assert run_export(str(ckpt), "torchscript", output=str(folder), no_check=True) == 0
    assert (folder / f"{ckpt.stem}.torchscript").is_file()
