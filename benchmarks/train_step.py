"""Training-step speed: the reference implementation's way against ours, side by side in one run.

- reference: fp32, eager, NCHW, targets built in Python loops over images and boxes on the CPU
  (:class:`benchmarks.reference_loss.ReferenceYoloLoss`, as the popular PyTorch port does it), the CSP stages
  as the port writes them (:func:`as_port`);
- ours: :class:`yolo_attn.engine.loss.YoloLoss` (vectorized assignment), gradient clipping and an EMA update
  as our trainer does, in several layouts and precisions (channels-last, bf16 autocast, torch.compile).

Every variant trains its own copy of the same model on the same batch (random pixels, a realistic number of
boxes per image: the speed of a step does not depend on what the pixels show) with SGD: the reference with
torch's default SGD (on a CPU a loop over the tensors), ours with the trainer's (fused where torch has it,
:func:`yolo_attn.engine.trainer.build_optimizer`). Rounds visit
every variant in turn; medians with min-max. On a GPU (``--device cuda``) the mixed precision is fp16
autocast with a GradScaler, as the trainer runs there, and bf16 autocast is timed beside it; each step ends
with the loss read back (``loss.item()``), so the GPU's work is inside the time.

    python tools/benchmark.py --train [--img-size 416] [--train-batch 8] [--rounds 5] [--compile-train] [--device cuda]
"""
from __future__ import annotations

import copy
import statistics
import time
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import torch
import torch.nn as nn

from yolo_attn.engine.ema import ModelEMA
from yolo_attn.engine.loss import YoloLoss
from yolo_attn.engine.trainer import build_optimizer
from yolo_attn.inference.benchmark import machine_summary
from yolo_attn.models import build_model
from yolo_attn.models.backbone import CSPTinyBlock

from .reference_loss import ReferenceYoloLoss

__all__ = ["TrainVariant", "as_port", "make_batch", "run_train_benchmark", "train_variants"]


def make_batch(batch: int = 8, img_size: int = 416, num_classes: int = 10, boxes_per_image: int = 6, seed: int = 0):
    """Random images and (M, 6) targets [image, class, x1, y1, x2, y2] in pixels: boxes of 12 px to half the
    image (at most 200 px), inside it."""
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(batch, 3, img_size, img_size, generator=g)
    largest = min(200.0, img_size / 2)
    rows = []
    for b in range(batch):
        for _ in range(boxes_per_image):
            w, h = (torch.rand(2, generator=g) * (largest - 12) + 12).tolist()
            x, y = (torch.rand(2, generator=g) * torch.tensor([img_size - w, img_size - h])).tolist()
            rows.append([b, int(torch.randint(0, num_classes, (1,), generator=g)), x, y, x + w, y + h])
    return images, torch.tensor(rows, dtype=torch.float32)


@dataclass
class TrainVariant:
    name: str
    step: Callable[[], float]  # one training step; returns the loss
    times_ms: List[float] = field(default_factory=list)
    setup_s: float = 0.0


def _sgd(model: nn.Module) -> torch.optim.Optimizer:
    """The reference's optimizer: torch's SGD as it comes, every parameter decayed."""
    return torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.937, nesterov=True, weight_decay=5e-4)


def _our_sgd(model: nn.Module) -> torch.optim.Optimizer:
    """The trainer's SGD at the reference's settings."""
    return build_optimizer(model, "sgd", lr=1e-4, momentum=0.937, weight_decay=5e-4)


def _port_csp_stage(stage: CSPTinyBlock, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """A CSP stage as the port computes it: the route's half taken with ``torch.split(...)[1]``, the stage's
    output concatenated whole, then pooled (our block's values, by other operations)."""
    x = stage.conv1(x)
    route = x
    x = stage.conv2(torch.split(x, x.shape[1] // 2, dim=1)[1])
    feat = stage.conv4(torch.cat([stage.conv3(x), x], dim=1))
    return stage.pool(torch.cat([route, feat], dim=1)), feat


def as_port(model: nn.Module) -> nn.Module:
    """``model`` with its CSP stages computed the port's way (:func:`_port_csp_stage`), for the reference step:
    ours pools its route and its feature apart and, in training, pools and takes the route in one function with
    one backward (``yolo_attn.models.backbone._PoolAndRoute``)."""
    for module in model.modules():
        if isinstance(module, CSPTinyBlock):
            module.forward = types.MethodType(_port_csp_stage, module)
    return model


def _reference_step(model: nn.Module, images: torch.Tensor, targets: torch.Tensor) -> Callable[[], float]:
    config = model.config()
    loss_fn = ReferenceYoloLoss(config["anchors"], config["anchor_masks"], model.num_classes)
    optimizer = _sgd(model)

    def step() -> float:
        outputs = model(images)
        loss = loss_fn(outputs, targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return loss.item()

    return step


def _our_step(model: nn.Module, images: torch.Tensor, targets: torch.Tensor, amp_dtype: Optional[torch.dtype],
              channels_last: bool, compile_model: bool = False) -> Callable[[], float]:
    """The step of yolo_attn.engine.trainer.train_one_epoch (without data loading and logging), on the
    images' device; fp16 with a GradScaler, as the trainer runs it on CUDA."""
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    loss_fn = YoloLoss(model.level_anchors(), model.num_classes, "multi").to(images.device)
    optimizer = _our_sgd(model)
    ema = ModelEMA(model)
    forward = torch.compile(model) if compile_model else model
    size = tuple(images.shape[2:])
    device_type = images.device.type
    scaler = torch.amp.GradScaler(device_type, enabled=amp_dtype == torch.float16)

    def step() -> float:
        with torch.autocast(device_type, dtype=amp_dtype, enabled=amp_dtype is not None):
            outputs = forward(images)
        loss, _ = loss_fn(outputs, targets, size)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        scaler.step(optimizer)
        scaler.update()
        ema.update(model)
        return loss.item()

    return step


PHASES = ("forward", "loss", "backward", "clip + SGD", "EMA")


def phase_times(model: nn.Module, images: torch.Tensor, targets: torch.Tensor, steps: int = 5,
                amp_dtype: Optional[torch.dtype] = torch.bfloat16) -> Dict[str, float]:
    """Median ms of each phase of our channels-last step (the fastest eager variant), timed apart: where the
    step's time goes, without a profiler's overhead (which inflates the small memory-bound operations)."""
    model = copy.deepcopy(model).train().to(memory_format=torch.channels_last)
    images = images.contiguous(memory_format=torch.channels_last)
    loss_fn = YoloLoss(model.level_anchors(), model.num_classes, "multi").to(images.device)
    optimizer = _our_sgd(model)
    ema = ModelEMA(model)
    device = images.device
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)  # as the trainer, on CUDA

    def mark() -> float:
        if device.type == "cuda":  # the GPU's queued work belongs to the phase that queued it
            torch.cuda.synchronize(device)
        return time.perf_counter()

    times: Dict[str, List[float]] = {name: [] for name in PHASES}
    for i in range(steps + 1):  # the first step allocates: not timed
        marks = [mark()]
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            outputs = model(images)
        marks.append(mark())
        loss, _ = loss_fn(outputs, targets, tuple(images.shape[2:]))
        marks.append(mark())
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        marks.append(mark())
        scaler.unscale_(optimizer)
        nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        scaler.step(optimizer)
        scaler.update()
        marks.append(mark())
        ema.update(model)
        marks.append(mark())
        if i:
            for name, a, b in zip(PHASES, marks, marks[1:]):
                times[name].append((b - a) * 1000.0)
    return {name: statistics.median(v) for name, v in times.items()}


def train_variants(model: nn.Module, images: torch.Tensor, targets: torch.Tensor,
                   compile_step: bool = False) -> List[TrainVariant]:
    """The step variants on the images' device (the model is copied there): bf16 autocast on a CPU; fp16
    autocast with a GradScaler (the trainer's CUDA precision) and bf16 on a GPU."""
    fresh = lambda: copy.deepcopy(model).train().to(images.device)  # noqa: E731 - each trains its own copy
    amp, name = _mixed_precision(images.device)
    variants = [
        ("reference: fp32 eager NCHW, loop-built targets", lambda: _reference_step(as_port(fresh()), images, targets)),
        ("ours: fp32 NCHW, vectorized loss", lambda: _our_step(fresh(), images, targets, None, False)),
        ("ours: fp32 channels-last", lambda: _our_step(fresh(), images, targets, None, True)),
        (f"ours: {name} NCHW", lambda: _our_step(fresh(), images, targets, amp, False)),
        (f"ours: {name} channels-last", lambda: _our_step(fresh(), images, targets, amp, True)),
    ]
    if amp != torch.bfloat16:
        variants.append(("ours: bf16 autocast channels-last",
                         lambda: _our_step(fresh(), images, targets, torch.bfloat16, True)))
    if compile_step:
        variants += [
            ("ours: torch.compile fp32 NCHW",
             lambda: _our_step(fresh(), images, targets, None, False, compile_model=True)),
            (f"ours: torch.compile {name} channels-last",
             lambda: _our_step(fresh(), images, targets, amp, True, compile_model=True)),
        ]
    built = []
    for name, make in variants:
        start = time.perf_counter()
        step = make()
        step()  # the first step allocates (and compiles): part of setup, not of the timing
        built.append(TrainVariant(name, step, setup_s=time.perf_counter() - start))
    return built


def _mixed_precision(device: torch.device):
    """The trainer's mixed precision on ``device`` and its name: fp16 (+ GradScaler) on CUDA, bf16 on a CPU."""
    if device.type == "cuda":
        return torch.float16, "fp16 autocast + GradScaler"
    return torch.bfloat16, "bf16 autocast"


def run_train_benchmark(img_size: int = 416, batch: int = 8, rounds: int = 5, weights: Optional[str] = None,
                        num_classes: int = 10, compile_step: bool = False,
                        csv_path: Optional[str] = "benchmarks/results_train.csv", device: str = "cpu",
                        log: Callable[[str], None] = print) -> int:
    """Time the training-step variants in interleaved rounds on ``device``; print a table, write CSV;
    returns 0."""
    from yolo_attn.utils.device import resolve_device

    device = resolve_device(device)
    if weights:
        from yolo_attn.utils.checkpoint import load_model

        model, _ = load_model(weights)
    else:
        torch.manual_seed(0)
        model = build_model(0, num_classes)
    images, targets = make_batch(batch, img_size, model.num_classes)
    images, targets = images.to(device), targets.to(device)
    machine = machine_summary(device)
    log(f"machine: {machine}")
    log(f"training step at {img_size}, batch {batch}, {len(targets)} boxes; building and warming up ...")
    variants = train_variants(model, images, targets, compile_step)
    rounds = max(1, rounds)
    for r in range(rounds):
        for v in variants:
            start = time.perf_counter()
            v.step()
            v.times_ms.append((time.perf_counter() - start) * 1000.0)
        log(f"  round {r + 1}/{rounds}: " + ", ".join(f"{v.times_ms[-1]:.0f}" for v in variants) + " ms")
    reference = statistics.median(variants[0].times_ms)
    rows: List[Dict[str, object]] = []
    lines = ["| training step | ms (median) | min-max | img/s | x reference | setup s |",
             "|---|---:|---:|---:|---:|---:|"]
    for v in variants:
        median = statistics.median(v.times_ms)
        row = {"variant": v.name, "batch": batch, "img_size": img_size, "ms_median": round(median, 1),
               "ms_min": round(min(v.times_ms), 1), "ms_max": round(max(v.times_ms), 1),
               "img_per_s": round(1000.0 * batch / median, 2), "speedup_vs_reference": round(reference / median, 3),
               "setup_s": round(v.setup_s, 1)}
        rows.append(row)
        lines.append(f"| {v.name} | {median:.0f} | {min(v.times_ms):.0f}-{max(v.times_ms):.0f} | "
                     f"{row['img_per_s']:.1f} | {row['speedup_vs_reference']:.2f} | {v.setup_s:.1f} |")
    log("")
    log(f"{machine}; training step at {img_size}, batch {batch}")
    log("\n".join(lines))
    from yolo_attn.models.info import model_info

    gflop = model_info(model, img_size)["gflops"] * batch  # the forward's; the backward does about twice as much
    amp, name = _mixed_precision(device)
    phases = phase_times(model.to(device), images, targets, amp_dtype=amp)
    log(f"ours, {name.split(' +')[0]} channels-last, by phase (medians of 5 steps): " + ", ".join(
        f"{name} {ms:.0f} ms" for name, ms in phases.items())
        + f"; forward {1000 * gflop / phases['forward']:.0f} GFLOP/s, backward about "
        f"{2000 * gflop / phases['backward']:.0f} GFLOP/s")
    if csv_path:
        import csv
        import io

        from yolo_attn.utils.paths import write_atomic

        buf = io.StringIO()
        buf.write(f"# {machine}\n")
        writer = csv.DictWriter(buf, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
        write_atomic(Path(csv_path), buf.getvalue())
        log(f"written {csv_path}")
    return 0
