"""The CUDA paths: the detector, evaluation and both benchmarks on a GPU agree with the CPU. Most tests need a
GPU and skip without one (CI has none; they ran on a lent H200); the choices that can be checked without one
(what runs where, the errors) run everywhere."""
import numpy as np
import pytest
import torch

from yolo_attn.eval import run as run_module
from yolo_attn.inference import Detector
from yolo_attn.inference.benchmark import BACKEND_GROUPS, build_variants, run_benchmark
from yolo_attn.models import build_model
from yolo_attn.utils.checkpoint import make_meta, save_checkpoint

from ..eval.eval_fakes import NAMES as EVAL_NAMES
from ..eval.eval_fakes import write_yolo_dataset
from .helpers import make_checkpoint, write_images

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def _relative_error(got, want) -> float:
    return max(float((g - w).abs().max() / w.abs().max()) for g, w in zip(got, want))


def test_benchmark_on_cuda_lists_the_torch_variants_and_says_what_it_skips():
    """On a GPU the benchmark times PyTorch there (fp16 is the detector's choice) and names the CPU runtimes it
    leaves out; nothing is built yet, so this runs without a GPU."""
    model = build_model(0, 3).eval()
    lines = []
    variants = build_variants(model, make_meta(model, ["a", "b", "c"], img_size=64), 64, BACKEND_GROUPS,
                              device="cuda", log=lines.append)
    assert [(v.name, v.precision) for v in variants] == [
        ("torch fp32 eager NCHW (baseline)", "fp32"), ("torch fp32 channels-last BN folded", "fp32"),
        ("torch fp16 channels-last BN folded", "fp16"), ("torch bf16 channels-last BN folded", "bf16"),
        ("torch.compile fp16 (frozen)", "fp16")]
    assert variants[0].baseline and not any(v.backend for v in variants)
    assert lines == ["on cuda: onnxruntime, opencv, openvino skipped (they run on the CPU: time them with "
                     "--device cpu)"]


def test_eval_refuses_fp16_on_a_cpu_before_loading_anything(tmp_path):
    with pytest.raises(ValueError, match="precision fp16 runs on CUDA, and the device is cpu; on a CPU use "
                                         "--precision fp32 or bf16"):
        run_module.run_eval(tmp_path / "missing.pt", device="cpu", precision="fp16", project=tmp_path / "runs")
    assert not (tmp_path / "runs").exists()


@needs_cuda
@pytest.mark.parametrize("precision, tolerance", [("fp32", 5e-3), ("fp16", 2e-2)])
def test_detector_on_cuda_matches_the_cpu(tmp_path, precision, tolerance):
    """Raw maps of the GPU detector (fp32 with cuDNN's TF32 convolutions, or fp16) within a relative tolerance
    of the CPU's fp32, and the final boxes of the confident detections within a pixel or two."""
    ckpt = make_checkpoint(tmp_path / "m.pt", phi=2)
    image = write_images(tmp_path / "img", count=1)[0]
    cpu = Detector.load(ckpt, device="cpu", backend="torch", precision="fp32", conf=0.2)
    gpu = Detector.load(ckpt, device="cuda", backend="torch", precision=precision, conf=0.2)
    assert gpu.backend.device.startswith("cuda") and gpu.backend.precision == precision
    x = torch.rand(2, 3, *cpu.input_shape)
    assert _relative_error(gpu.backend(x), cpu.backend(x)) < tolerance
    want, got = cpu(str(image)), gpu(str(image))
    assert len(want) > 0 and abs(len(got) - len(want)) <= max(1, len(want) // 10)
    matched = 0
    for box, label in zip(want.boxes, want.labels):
        same = got.boxes[got.labels == label]
        if len(same) and np.abs(same - box).max(1).min() < 2.0:
            matched += 1
    assert matched >= 0.9 * len(want)


@needs_cuda
def test_detector_picks_fp16_on_cuda(tmp_path):
    detector = Detector.load(make_checkpoint(tmp_path / "m.pt"), device="cuda")
    assert (detector.backend.name, detector.backend.precision) == ("torch", "fp16")
    assert "on cuda" in detector.describe()


@needs_cuda
def test_eval_in_fp16_on_cuda_scores_as_fp32_on_the_cpu(tmp_path):
    config = write_yolo_dataset(tmp_path / "ds", num_images=4)
    torch.manual_seed(0)
    model = build_model(2, len(EVAL_NAMES)).eval()
    ckpt = tmp_path / "m.pt"
    save_checkpoint({"meta": make_meta(model, EVAL_NAMES, img_size=96), "model": model.state_dict()}, ckpt)
    scores = {}
    for device, precision in (("cpu", "fp32"), ("cuda", "fp16")):
        result = run_module.run_eval(ckpt, config, metric=("voc12",), device=device, precision=precision,
                                     workers=0, batch_size=2, project=tmp_path / "runs", name=precision)
        scores[precision] = (result["voc12_map50"], sum(row["detections"] for row in result["classes"]))
    (map_cpu, found_cpu), (map_gpu, found_gpu) = scores["fp32"], scores["fp16"]
    assert found_cpu > 0 and abs(found_gpu - found_cpu) <= 0.05 * found_cpu
    assert abs(map_gpu - map_cpu) < 0.02


@needs_cuda
def test_benchmarks_run_on_cuda(tmp_path):
    from benchmarks.train_step import run_train_benchmark

    lines = []
    ckpt = make_checkpoint(tmp_path / "m.pt")
    assert run_benchmark(str(ckpt), 64, (1, 2), ("torch",), rounds=1, csv_path=str(tmp_path / "i.csv"),
                         device="cuda", log=lines.append) == 0
    table = "\n".join(lines)
    assert "torch fp16 channels-last BN folded | 2 |" in table and "not available" not in table
    assert torch.cuda.get_device_name(0) in table
    assert run_train_benchmark(64, 2, rounds=1, csv_path=str(tmp_path / "t.csv"), device="cuda",
                               log=lines.append) == 0
    assert "ours: fp16 autocast + GradScaler channels-last" in "\n".join(lines)


@needs_cuda
def test_a_gpu_runs_checkpoints_hold_cpu_tensors_only(tmp_path):
    """The checkpoints of a run on the GPU (model, EMA, optimizer state) load with a plain torch.load on a
    machine without one."""
    from yolo_attn.engine.config import load_train_config
    from yolo_attn.engine.trainer import train

    from ..engine.conftest import write_tiny_dataset

    config = write_tiny_dataset(tmp_path / "data")
    cfg = load_train_config(None, dict(data=str(config), img_size=64, batch_size=4, workers=0, epochs=1,
                                       device="cuda", project=str(tmp_path / "runs"), phi=2))
    run = train(cfg)
    ckpt = torch.load(run / "weights/last.pt", weights_only=True)  # no map_location
    tensors = [v for part in ("model", "ema") for v in ckpt[part].values()]
    tensors += [v for s in ckpt["optimizer"]["state"].values() for v in s.values() if torch.is_tensor(v)]
    assert tensors and all(t.device.type == "cpu" for t in tensors)  # (the trainer's resume tests load them)
