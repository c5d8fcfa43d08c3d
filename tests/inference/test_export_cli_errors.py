"""tools/export.py and tools/benchmark.py on paths and options they cannot use as given: an OpenVINO export into a
folder that already exists (the current folder, a mount point) writes into it and leaves the folder itself in
place; an ONNX opset newer than torch exports, a CSV path that cannot be written, a folder given as weights or as a
data config are one clear line each, before any export or timing; an upper-case .XML output is written as .xml."""
from __future__ import annotations

import importlib.util
import os
import runpy
from pathlib import Path

import pytest

from yolo_attn.inference.detector import Detector
from yolo_attn.inference.export import MIN_OPSET, export_model, max_opset

from .helpers import make_checkpoint

ROOT = Path(__file__).resolve().parents[2]
needs_openvino = pytest.mark.skipif(
    importlib.util.find_spec("openvino") is None or importlib.util.find_spec("onnx") is None,
    reason="openvino and onnx not installed (the openvino extra)")
SIZE = "64"


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt", phi=0)


@pytest.fixture(scope="module")
def export_tool():
    return runpy.run_path(str(ROOT / "tools" / "export.py"))["main"]


@pytest.fixture(scope="module")
def benchmark_tool():
    return runpy.run_path(str(ROOT / "tools" / "benchmark.py"))["main"]


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err


# --- OpenVINO export into a folder that exists -------------------------------------------------------------------

@needs_openvino
@pytest.mark.parametrize("given", ["folder", "dot", "cwd"])
def test_openvino_export_into_an_existing_folder_writes_into_it_and_keeps_the_folder(
        ckpt, export_tool, tmp_path, monkeypatch, given):
    """The folder was swapped for a temp one (renamed into its parent): `--output .` failed with "PosixPath('.')
    has an empty name", `--output $PWD` left the shell in a deleted folder, a read-only parent refused it."""
    folder = tmp_path / "mnt"
    folder.mkdir()
    os.chmod(folder, 0o750)  # the user's folder keeps its own mode
    inode = os.stat(folder).st_ino
    monkeypatch.chdir(folder)
    output = {"folder": str(folder), "dot": ".", "cwd": os.getcwd()}[given]
    assert export_tool(["--weights", str(ckpt), "--format", "openvino", "--output", output, "--img-size", SIZE,
                        "--no-check"]) == 0
    assert os.stat(folder).st_ino == inode and os.stat(".").st_ino == inode  # the same folder, the shell still in it
    assert sorted(p.name for p in folder.iterdir()) == ["tiny.bin", "tiny.xml"]  # no temp file or folder left
    assert os.stat(folder).st_mode & 0o777 == 0o750
    assert {os.stat(folder / n).st_mode & 0o777 for n in ("tiny.bin", "tiny.xml")} == {0o644}
    assert Detector.load(folder / "tiny.xml").names == ["cat", "dog", "bird"]


@needs_openvino
def test_openvino_reexport_replaces_the_ir_in_place_and_a_new_folder_is_still_made_whole(ckpt, tmp_path):
    out = export_model(ckpt, "openvino", tmp_path / "new" / "sub", img_size=64, log=lambda s: None)
    folder = out.parent
    assert os.stat(folder).st_mode & 0o777 == 0o755
    assert sorted(p.name for p in tmp_path.joinpath("new").iterdir()) == ["sub"]  # the temp folder became it
    inode, before = os.stat(folder).st_ino, out.read_bytes()
    again = export_model(ckpt, "openvino", folder, img_size=96, log=lambda s: None)
    assert again == out and os.stat(folder).st_ino == inode and out.read_bytes() != before
    assert sorted(p.name for p in folder.iterdir()) == ["tiny.bin", "tiny.xml"]
    assert Detector.load(out).input_shape == (96, 96)


@needs_openvino
@pytest.mark.parametrize("name", ["model.XML", "model.Xml"])
def test_openvino_output_with_an_upper_case_xml_suffix_is_written_as_xml(ckpt, export_tool, tmp_path, capsys, name):
    """save_model refuses anything but a lower-case .xml (a RuntimeError traceback), and finds the .bin by it."""
    assert export_tool(["--weights", str(ckpt), "--format", "openvino", "--output", str(tmp_path / name),
                        "--img-size", SIZE]) == 0
    assert f"-> {tmp_path / 'model.xml'} (openvino fp32" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.bin", "model.xml"]


# --- ONNX opset ------------------------------------------------------------------------------------------------

@pytest.mark.skipif(max_opset() is None, reason="this torch does not say which opsets it exports")
def test_an_opset_newer_than_torch_exports_is_one_line_naming_the_range(ckpt, export_tool, tmp_path, capsys,
                                                                        monkeypatch):
    newest = max_opset()
    assert export_tool(["--weights", str(ckpt), "--output", str(tmp_path / "newest.onnx"), "--opset", str(newest),
                        "--img-size", SIZE, "--no-check"]) == 0  # the bound is one torch really exports
    import torch

    def no_export(*args, **kwargs):
        raise AssertionError("exported before the opset was checked")

    monkeypatch.setattr(torch.onnx, "export", no_export)
    assert export_tool(["--weights", str(ckpt), "--output", str(tmp_path / "m.onnx"), "--opset", str(newest + 1)]) == 1
    err = _one_error_line(capsys)
    assert f"--opset {newest + 1}: ONNX opset {newest + 1} is newer than the installed torch" in err
    assert f"use {MIN_OPSET} to {newest}" in err
    assert not (tmp_path / "m.onnx").exists()


# --- tools/benchmark.py ---------------------------------------------------------------------------------------

def _bench_args(ckpt, *more) -> list:
    return ["--weights", str(ckpt), "--img-size", SIZE, "--batch", "1", "--rounds", "1", "--backends", "torch", *more]


@pytest.mark.parametrize("train", [False, True])
@pytest.mark.parametrize("where", ["under_a_file", "a_folder"])
def test_benchmark_csv_path_that_cannot_be_written_is_refused_before_timing(ckpt, benchmark_tool, tmp_path, capsys,
                                                                           where, train):
    """It failed with a FileExistsError traceback once the whole benchmark had run."""
    (tmp_path / "afile").write_text("x")
    (tmp_path / "results").mkdir()
    csv = {"under_a_file": tmp_path / "afile" / "x.csv", "a_folder": tmp_path / "results"}[where]
    args = ["--train", "--csv", str(csv)] if train else _bench_args(ckpt, "--csv", str(csv))
    assert benchmark_tool(args) == 1
    err = _one_error_line(capsys)
    assert "machine:" not in capsys.readouterr().out  # nothing loaded or timed
    named = Path(str(csv).replace(".csv", "_train.csv")) if train else csv  # --train writes x_train.csv
    if where == "under_a_file":
        assert f"--csv {named}: {tmp_path / 'afile'} is a file, not a folder" in err
    else:
        assert f"--csv {named}: is a folder; give a file name" in err


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes into any folder")
def test_benchmark_csv_in_a_folder_that_cannot_be_written_is_refused_before_timing(ckpt, benchmark_tool, tmp_path,
                                                                                  capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    os.chmod(locked, 0o555)
    try:
        assert benchmark_tool(_bench_args(ckpt, "--csv", str(locked / "sub" / "x.csv"))) == 1
    finally:
        os.chmod(locked, 0o755)
    assert f"cannot write into {locked} (permission denied)" in _one_error_line(capsys)


@pytest.mark.parametrize("kind", ["openvino_export", "other"])
def test_benchmark_weights_given_as_a_folder_say_what_the_folder_is(benchmark_tool, tmp_path, capsys, kind):
    """Both said "no such weights file" (the folder exists)."""
    folder = tmp_path / "best_openvino"
    folder.mkdir()
    if kind == "openvino_export":
        (folder / "best.xml").write_text("<net/>")
        (folder / "best.bin").write_bytes(b"")
    assert benchmark_tool(["--weights", str(folder), "--backends", "torch"]) == 1
    err = _one_error_line(capsys)
    assert "no such weights file" not in err
    if kind == "openvino_export":
        assert f"--weights {folder}: is an OpenVINO export folder (best.xml)" in err
        assert "give the checkpoint (.pt) it was exported from" in err
    else:
        assert f"--weights {folder}: is a folder; give a weights file" in err


def test_a_folder_given_as_data_config_says_so(ckpt, benchmark_tool, export_tool, tmp_path, capsys):
    """Both tools said "no such data config" for a folder of images."""
    images = tmp_path / "imgs"
    images.mkdir()
    assert benchmark_tool(_bench_args(ckpt, "--data", str(images), "--csv", "")) == 1
    err = _one_error_line(capsys)
    assert f"--data {images}: is a folder, not a data config; give the dataset's YAML config" in err
    assert export_tool(["--weights", str(ckpt), "--format", "onnx", "--precision", "int8", "--data", str(images),
                        "--output", str(tmp_path / "q.onnx")]) == 1
    err = _one_error_line(capsys)
    assert f"--data {images}: is a folder, not a data config" in err
    assert "to calibrate on a folder of images, pass it as --calib-images" in err
    assert not (tmp_path / "q.onnx").exists()
