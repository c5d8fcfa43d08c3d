"""The files an export and a load deal with: an OpenVINO export folder shared as every other result (not owner
only), an OpenVINO --output named as another kind of model file refused, and a file that is no torch file at all
given as weights named for what it is (not for "pickled data")."""
from __future__ import annotations

import importlib.util
import os
import stat

import cv2
import numpy as np
import pytest
import torch

from yolo_attn.inference.detector import Detector
from yolo_attn.inference.export import export_model, run_export
from yolo_attn.utils.checkpoint import load_checkpoint, load_model

from .helpers import make_checkpoint

needs_openvino = pytest.mark.skipif(
    importlib.util.find_spec("openvino") is None or importlib.util.find_spec("onnx") is None,
    reason="openvino and onnx not installed (the openvino extra)")
SIZE = 64


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt", phi=0)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@needs_openvino
def test_openvino_export_folder_and_files_are_shared_like_other_results(ckpt, tmp_path):
    """The folder came from mkdtemp: drwx------, while write_atomic's .onnx / .pt are rw-r--r--."""
    out = export_model(ckpt, "openvino", tmp_path / "ov", img_size=SIZE, log=lambda s: None)
    assert out == tmp_path / "ov" / "tiny.xml"
    assert _mode(out.parent) == 0o755
    assert _mode(out) == _mode(out.with_suffix(".bin")) == 0o644
    shared = tmp_path / "shared"  # a folder with other files: only the .xml and .bin move in
    shared.mkdir()
    (shared / "notes.txt").write_text("keep me")
    into = export_model(ckpt, "openvino", shared / "m.xml", img_size=SIZE, log=lambda s: None)
    assert _mode(into) == _mode(into.with_suffix(".bin")) == 0o644
    assert sorted(p.name for p in shared.iterdir()) == ["m.bin", "m.xml", "notes.txt"]  # no temp folder left


@pytest.mark.parametrize("name", ["model.onnx", "m3.pt", "yolov4-tiny.weights", "tiny.bin", "M.PTH"])
def test_openvino_output_named_as_another_model_file_is_refused(ckpt, tmp_path, capsys, name):
    """--format openvino --output model.onnx made a folder called model.onnx holding the IR."""
    assert run_export(str(ckpt), "openvino", str(tmp_path / name), img_size=SIZE, no_check=True) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"--output {tmp_path / name}: an OpenVINO export is an .xml file" in err
    assert "give an .xml file name or a folder" in err
    assert not (tmp_path / name).exists()


@needs_openvino
def test_openvino_output_folder_with_dots_in_its_name_still_works(ckpt, tmp_path):
    out = export_model(ckpt, "openvino", tmp_path / "exports" / "v1.2", img_size=SIZE, log=lambda s: None)
    assert out == tmp_path / "exports" / "v1.2" / "tiny.xml"
    assert out.is_file() and out.with_suffix(".bin").is_file()


def _write_jpeg(path):
    cv2.imwrite(str(path), np.full((16, 16, 3), 128, np.uint8))
    return path


@pytest.mark.parametrize("name, write, kind", [
    ("photo.jpg", _write_jpeg, "reads as a JPEG image"),
    ("notes.txt", lambda p: p.write_text("not a checkpoint\n"), "reads as text"),
    ("empty.pt", lambda p: p.write_bytes(b""), "is an empty file"),
    ("short.pt", lambda p: p.write_bytes(b"ab\xff"), "reads as unknown data"),
    ("lfs.pt", lambda p: p.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:ab\nsize 9\n"),
     "reads as a Git LFS pointer, not the file itself: git lfs pull fetches it"),
])
@pytest.mark.parametrize("loader", [load_model, lambda p: Detector.load(p, device="cpu")],
                         ids=["load_model", "Detector.load"])
def test_a_file_that_is_no_torch_file_says_what_it_reads_as(tmp_path, name, write, kind, loader):
    """`predict.py --weights some.jpg` said the JPEG 'holds pickled data beyond plain tensors'."""
    path = tmp_path / name
    write(path)
    with pytest.raises(ValueError) as err:
        loader(path)
    message = str(err.value)
    assert message.startswith(f"{path}: not a loadable PyTorch checkpoint or state dict (it {kind}); ")
    assert "our checkpoint (.pt), Darknet .weights or a port state dict (.pth)" in message
    assert "pickled" not in message and "\n" not in message


class _Disallowed:
    """Not a plain tensor or container: a weights-only load refuses it."""


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_a_torch_file_holding_a_disallowed_object_is_still_refused_as_pickled(tmp_path, zip_format):
    path = tmp_path / "odd.pt"
    torch.save({"model": {"w": torch.zeros(1)}, "extra": _Disallowed()}, path,
               _use_new_zipfile_serialization=zip_format)
    with pytest.raises(ValueError, match="refused to unpickle it, since that could run code") as err:
        load_checkpoint(path)
    assert "reads as" not in str(err.value)


@needs_openvino
def test_an_ir_without_its_bin_or_with_a_torn_one_says_so(ckpt, tmp_path):
    """OpenVINO's error was cut to its first line, "Exception from src/inference/src/cpp/core.cpp:84:"."""
    out = export_model(ckpt, "openvino", tmp_path / "ov", img_size=SIZE, log=lambda s: None)
    data = out.with_suffix(".bin").read_bytes()
    out.with_suffix(".bin").unlink()
    with pytest.raises(ValueError, match=r"tiny.xml: its weights, tiny.bin, are not beside it \(an OpenVINO IR is "
                                         r"the .xml and the .bin of its name; copy both\)"):
        Detector.load(out)
    out.with_suffix(".bin").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"tiny.xml: not a loadable OpenVINO/ONNX model \((?!Exception from).+\)"):
        Detector.load(out)


def test_names_given_for_a_checkpoint_are_said_to_be_unused_and_size_zero_is_refused(ckpt, tmp_path, caplog):
    """--classes-file with our checkpoint (which carries its names) was ignored without a word; --img-size 0 was
    taken as "the checkpoint's size" while -32 and 100 were refused."""
    import logging

    with caplog.at_level(logging.WARNING, logger="yolo_attn"):
        Detector.load(ckpt, classes=["x", "y", "z"], device="cpu")
    assert "carries its class names (cat, dog, bird), which are used; --classes-file / --num-classes" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="yolo_attn"):
        Detector.load(ckpt, device="cpu")
    assert "carries its class names" not in caplog.text
    with pytest.raises(ValueError, match="image size 0: YOLOv4-tiny needs a width and height that are positive"):
        export_model(ckpt, "onnx", tmp_path / "m.onnx", img_size=0, log=lambda s: None)
