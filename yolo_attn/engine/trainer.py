"""Training: ``train_one_epoch`` (a plain function) and ``train`` (warm-up + cosine, EMA, AMP, freeze,
closing mosaic, full-state resume, DDP, logs, plots and checkpoints)."""
from __future__ import annotations

import csv
import io
import logging
import math
import os
import random
import re
import shutil
import time
from contextlib import contextmanager, nullcontext
from datetime import timedelta
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
import yaml
from tqdm import tqdm

from ..data import build_dataset, build_train_loader, load_data_config
from ..data.coco import COCODataset
from ..data.letterbox import letterbox
from ..data.records import BadImageError, target_mask
from ..eval.coco import load_coco_ground_truth
from ..eval.evaluator import evaluate
from ..eval.report import print_report
from ..inference.hardware import bf16_reason, cpu_features, keep_freed_memory
from ..models import YoloV4Tiny, build_model, check_input_size
from ..models.attention import constant_channel_gates, resolve_attention
from ..models.darknet import darknet_cfg_beside, load_darknet_weights, read_darknet_cfg
from ..models.port import strip_wrapper_prefixes
from ..utils.checkpoint import is_our_checkpoint, load_checkpoint, load_model, make_meta, save_checkpoint
from ..utils.device import resolve_device
from ..utils.paths import results_folder, write_atomic
from .anchors import anchors_from_config, box_sizes, check_anchors
from .config import load_train_config
from .ema import ModelEMA
from .loss import YoloLoss
from .plots import plot_results
from .schedule import WarmupCosine

__all__ = ["auto_workers", "train", "train_one_epoch", "build_loss", "build_optimizer", "fitness"]

log = logging.getLogger("yolo_attn.train")

EMBEDDED_TIME_BUDGET = 29.0  # minutes: the embedded dataset's default schedule fills them, whatever the machine
# The embedded images are 320-416 px: trained at 320 for speed, the model scores higher seen at their native
# size (measured on a 28-minute phi 2 run: VOC12 mAP@0.5 0.791 at 320, 0.851 at 416, 0.866 at 480, 0.851 at 544)
EMBEDDED_EVAL_SIZE = 416
SINGLE_CLASS = "item"  # the one class of --single-cls, as YOLOv5 names it
FIT_EPOCHS = 3  # a time budget is re-fitted after each of the first epochs (see _fit_epochs_to_time)
RESULT_COLUMNS = ["epoch", "train/box", "train/obj", "train/cls", "lr", "map50", "map50_95", "voc07_map50",
                  "precision", "recall", "images_per_s", "epoch_time_s", "elapsed_s"]


def auto_workers(device: torch.device, world: int = 1, cpus: Optional[int] = None) -> int:
    """Loader worker processes for ``workers: auto``. None on a CPU of two cores or fewer: a worker decoding
    and augmenting there takes a core from the training step's threads, which then wait for it (measured on
    2 cores, phi 0 at 320, batch 8: 40.3 img/s with no workers against 34.9-37.7 with 2, 36.3 with 1). On a
    GPU, up to 8 per process (the CPU only feeds it); on larger CPUs 2."""
    cpus = cpus or os.cpu_count() or 1
    if device.type == "cuda":
        return max(1, min(8, cpus // max(world, 1)))
    return 0 if cpus <= 2 else 2


def _amp_dtype(amp: Any, device: torch.device) -> Optional[torch.dtype]:
    """Mixed precision: fp16 on CUDA; on a CPU, ``auto`` picks bf16 where it is the fast float path
    (``CpuFeatures.fast_bf16``: AMX, or AVX512-BF16 that the probe measured faster). AVX512-BF16 alone is not
    enough: an Intel Xeon without AMX ran a bf16 training step slower than fp32 channels-last (10.2 vs 13.0
    img/s at 320 px, batch 16), an AMD EPYC (Zen 4) 2.0x faster (288 vs 568 ms at 416, batch 8). ``true``
    forces bf16 on any CPU."""
    if amp in (False, None, "false", "off"):
        return None
    if device.type == "cuda":
        return torch.float16
    if amp == "auto":
        return torch.bfloat16 if cpu_features().fast_bf16 else None
    return torch.bfloat16


def _precision(amp_dtype: Optional[torch.dtype], amp: Any, device: torch.device) -> str:
    """The training precision and, for ``amp: auto`` on a CPU, why, for the start-of-run log line."""
    name = {torch.float16: "fp16 autocast + GradScaler", torch.bfloat16: "bf16 autocast"}.get(amp_dtype, "fp32")
    return f"{name} ({bf16_reason(cpu_features())})" if amp == "auto" and device.type == "cpu" else name


def fitness(metrics: Dict[str, float]) -> float:
    """Model selection score for best.pt: 0.1 * mAP@0.5 + 0.9 * mAP@0.5:0.95 (as YOLOv5)."""
    return 0.1 * metrics.get("map50", 0.0) + 0.9 * metrics.get("map50_95", 0.0)


def build_optimizer(model: nn.Module, name: str, lr: float, momentum: float, weight_decay: float):
    """Three groups: conv/linear weights (decayed), BatchNorm/LayerNorm weights and biases (not decayed)."""
    decay, no_decay, biases = [], [], []
    for module in model.modules():
        for pname, p in module.named_parameters(recurse=False):
            if pname == "bias":
                biases.append(p)
            elif isinstance(module, (nn.BatchNorm2d, nn.LayerNorm, nn.SyncBatchNorm)):
                no_decay.append(p)
            else:
                decay.append(p)
    groups = [
        {"params": decay, "weight_decay": weight_decay, "name": "weight"},
        {"params": no_decay, "weight_decay": 0.0, "name": "norm"},
        {"params": biases, "weight_decay": 0.0, "name": "bias"},
    ]
    if name == "sgd":
        return _fastest(torch.optim.SGD, groups, lr=lr, momentum=momentum, nesterov=True)
    if name == "adamw":
        return _fastest(torch.optim.AdamW, groups, lr=lr, betas=(momentum, 0.999))
    raise ValueError(f"unknown optimizer '{name}'; use sgd or adamw")


_TORCH_VERSION = tuple(int(part) for part in re.findall(r"\d+", torch.__version__)[:2])


def _fastest(cls: type, groups: List[Dict[str, Any]], **options: Any) -> torch.optim.Optimizer:
    """The optimizer's fused implementation (one kernel over all parameters) where this torch has one for the
    parameters' device (CPUs since torch 2.4), else its foreach one. On 2 CPU cores a step of YOLOv4-tiny's
    parameters (phi 2) takes 1.7 ms fused against 12.6 ms for torch's CPU default, a loop over the tensors (SGD),
    and 2.8 against 19.1 ms (AdamW)."""
    device = next((p.device.type for g in groups for p in g["params"]), "cpu")
    # recent torch checks the device at the first step, too late to fall back: fused only where kernels exist
    if device == "cuda" or (device == "cpu" and _TORCH_VERSION >= (2, 4)):
        try:
            return cls(groups, fused=True, **options)
        except (RuntimeError, TypeError, ValueError):  # no fused kernel for this optimizer in this torch
            pass
    return cls(groups, foreach=True, **options)


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: Dict[str, Any]) -> None:
    """``optimizer.load_state_dict`` keeping the implementation it was built with. torch takes the saved
    groups' ``fused``/``foreach`` flags too, and a run saved where fused kernels exist would then fail to
    step where they do not (and an older run would step slowly); it also places each state's ``step`` by
    them (on the device for fused AdamW, on the CPU otherwise), so the flags go in before loading."""
    flags = [{k: g[k] for k in ("fused", "foreach") if k in g} for g in optimizer.param_groups]
    groups = state.get("param_groups", [])
    if len(groups) == len(flags):  # a mismatch is load_state_dict's to report
        state = {**state, "param_groups": [{**saved, **kept} for saved, kept in zip(groups, flags)]}
    optimizer.load_state_dict(state)


def build_loss(cfg: Dict[str, Any], model: YoloV4Tiny) -> YoloLoss:
    """The loss a config describes. Gains are YOLOv5's, scaled as it scales them: box and objectness for
    two heads instead of three, objectness by (img_size / 640)^2 (fewer cells to average over) and
    classification by num_classes / 80."""
    nl, nc = 2, model.num_classes
    return YoloLoss(
        model.level_anchors(), nc, cfg["assigner"], anchor_t=cfg["anchor_t"], ignore_thresh=cfg["ignore_thresh"],
        box=cfg["box"] * 3 / nl, obj=cfg["obj"] * (cfg["img_size"] / 640) ** 2 * 3 / nl,
        cls=cfg["cls"] * nc / 80 * 3 / nl, balance=cfg["balance"], label_smoothing=cfg["label_smoothing"],
        iou_ratio=cfg.get("iou_ratio", 1.0), all_anchors=model.anchors,
    )


def init_head_biases(model: YoloV4Tiny, img_size: int) -> None:
    """Start objectness near the prior of ~8 objects per 640 x 640 image and classes near uniform (YOLOv5),
    so early training is not swamped by the loss of thousands of confident negatives."""
    with torch.no_grad():
        for head, stride in ((model.head_p5, 32), (model.head_p4, 16)):
            b = head.pred.bias.view(model.num_anchors, -1)
            b[:, 4] = math.log(8 / (640 / stride) ** 2)
            b[:, 5:] = math.log(0.6 / max(model.num_classes - 0.99, 0.01))


def train_one_epoch(
    model: nn.Module,
    loader,
    loss_fn: YoloLoss,
    optimizer: torch.optim.Optimizer,
    scheduler: WarmupCosine,
    ema: Optional[ModelEMA],
    device: torch.device,
    epoch: int,
    epochs: int,
    amp_dtype: Optional[torch.dtype] = None,
    scaler: Optional[torch.amp.GradScaler] = None,
    grad_clip: float = 10.0,
    channels_last: bool = True,
    multi_scale: bool = False,
    img_size: int = 416,
    verbose: bool = True,
) -> Dict[str, float]:
    """One pass over ``loader``; returns mean loss terms, the last lr and images/s.

    Raises FloatingPointError naming the batch's images when the loss is not finite.
    """
    model.train()
    sums = torch.zeros(3)
    seen, start = 0, time.perf_counter()
    bar = tqdm(loader, desc=f"epoch {epoch + 1}/{epochs}", disable=not verbose, dynamic_ncols=True, leave=True)
    autocast = torch.autocast(device.type, dtype=amp_dtype) if amp_dtype is not None else nullcontext()
    for i, (images, targets, infos) in enumerate(bar):
        scheduler.step()
        images = images.to(device, non_blocking=True)
        if multi_scale:
            images, targets = _rescale_batch(images, targets, img_size)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with autocast:
            outputs = model(images)
        loss, parts = loss_fn(outputs, targets.to(device), images.shape[2:])
        # one read-back a step (on a GPU each one stalls the queue): the logged parts and the check together
        box, obj, cls, total = torch.stack([parts["box"], parts["obj"], parts["cls"], loss.detach()]).float().cpu()
        if not torch.isfinite(total):
            paths = ", ".join(str(info.get("path", "?")) for info in infos)
            raise FloatingPointError(
                f"epoch {epoch + 1}, batch {i}: loss is {total.item()} (box {box.item():.4g}, obj {obj.item():.4g}, "
                f"cls {cls.item():.4g}); images: {paths}. Check these samples with tools/check_data.py, or lower --lr")
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            if grad_clip > 0:
                nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            if grad_clip > 0:  # 0: no clipping
                nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            optimizer.step()
        if ema is not None:
            ema.update(model)
        sums += torch.stack([box, obj, cls])
        seen += images.shape[0]
        if verbose:
            rate = seen / (time.perf_counter() - start)
            mean = sums / (i + 1)
            bar.set_postfix_str(f"box {mean[0]:.4f} obj {mean[1]:.4f} cls {mean[2]:.4f} "
                                f"lr {optimizer.param_groups[0]['lr']:.2e} {rate:.1f} img/s")
    n = max(1, len(loader))
    elapsed = time.perf_counter() - start
    return {"train/box": float(sums[0] / n), "train/obj": float(sums[1] / n), "train/cls": float(sums[2] / n),
            "lr": optimizer.param_groups[0]["lr"], "images_per_s": seen / max(elapsed, 1e-9)}


def _rescale_batch(images: torch.Tensor, targets: torch.Tensor, img_size: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Multi-scale training: resize the batch to a random multiple of 32 in [0.5, 1.5] x img_size."""
    # at least 64: at 32 the stride-32 map is 1x1, and a batch of one image has a single value per BatchNorm channel
    size = random.randrange(max(2, int(img_size * 0.5) // 32), max(2, int(img_size * 1.5) // 32) + 1) * 32
    scale = size / images.shape[2]
    if scale != 1:
        images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
        targets = targets.clone()
        targets[:, 2:] *= scale
    return images, targets


def _rng_state(device: torch.device) -> Dict[str, Any]:
    np_state = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])]}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: Dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(_tuplify(state["python"]))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    if device.type == "cuda" and state.get("cuda") is not None:
        torch.cuda.set_rng_state(state["cuda"], device)


def _to_cpu(state: Any) -> Any:
    """``state`` (a state dict, nested dicts and lists of tensors) with every tensor on the CPU, for saving.
    Loading moves them back: load_state_dict copies into the model's tensors, and the optimizer's
    load_state_dict moves its state to each parameter's device."""
    if isinstance(state, torch.Tensor):
        return state.detach().cpu()
    if isinstance(state, dict):
        return {k: _to_cpu(v) for k, v in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(_to_cpu(v) for v in state)
    return state


def _rng_states(device: torch.device, world: int) -> List[Dict[str, Any]]:
    """Every rank's RNG state, by rank (a collective under DDP: every rank calls it)."""
    state = _rng_state(device)
    if world == 1:
        return [state]
    states: List[Any] = [None] * world
    dist.all_gather_object(states, state)
    return states


def _warmup_iters(warmup_epochs: float, iters: int) -> int:
    """Warm-up length: ``warmup_epochs`` of ``iters`` iterations, at least 100 (or one epoch where an epoch is
    shorter) as YOLOv5, so a small dataset still warms up; 0 turns warm-up off."""
    if warmup_epochs <= 0:
        return 0
    return max(round(warmup_epochs * iters), min(100, iters))


def _tuplify(x):
    return tuple(_tuplify(v) for v in x) if isinstance(x, (list, tuple)) else x


def _weights_source(path: Optional[str], classes: Optional[str]) -> Tuple[Optional[YoloV4Tiny], List[str]]:
    """The model an initial weights file holds (our checkpoint, a port state dict, or Darknet .weights whose
    class names are known: --classes, or a .names beside them), read once, with its class names; None for no
    file, for a backbone-only .conv.29 and for Darknet weights without names, which load layer by layer."""
    if not path or str(path).endswith(".conv.29"):
        return None, []
    if str(path).endswith(".weights"):
        try:
            model, meta = load_model(path, classes=classes)
        except ValueError:
            if classes is not None:  # names given that do not fit the file: the user's to correct
                raise
            return None, []
        return model, list(meta.get("names") or [])
    model, meta = load_model(path, classes=classes, num_classes=_num_classes_in(path))
    return model, list(meta.get("names") or [])


def _darknet_arch(path: Optional[str]) -> Dict[str, Any]:
    """The anchors and masks of Darknet weights, from the .cfg of their name beside them (obj.cfg for
    obj_best.weights): a Darknet model's own, as our checkpoints carry theirs. Empty without such a cfg."""
    found = darknet_cfg_beside(path) if path and str(path).endswith(".weights") else None
    if found is None:
        return {}
    settings = read_darknet_cfg(found)
    log.info("%s: anchors %s, masks %s from %s", path, [tuple(round(v, 1) for v in a) for a in settings.anchors],
             settings.anchor_masks, found)
    return {"anchors": settings.anchors, "anchor_masks": settings.anchor_masks}


def _init_weights(model: YoloV4Tiny, path: str, source: Optional[YoloV4Tiny], source_names: Sequence[str],
                  names: Sequence[str]) -> None:
    """Initialize from ``source`` (see _weights_source) or Darknet weights at ``path``; everything whose shape
    matches loads, the rest (a head for another class count, attention blocks absent from the file) is
    reported. When the two sets of class names differ but share some, the heads' class channels go by name
    (``_heads_by_name``): a model of [person, car, dog] fine-tuned on [dog, person] starts knowing both."""
    if source is None:
        report = load_darknet_weights(model, path)
        log.info("%s: loaded %d Darknet conv layers", path, len(report.loaded))
        return
    by_name = list(source_names) != list(names) and bool(set(source_names) & set(names))
    state = source.state_dict()
    own = model.state_dict()
    loaded = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape
              and not (by_name and ".pred." in k)}
    differs = sorted(k for k in state if k in own and k not in loaded and not (by_name and ".pred." in k))
    absent = sorted(k for k in state if k not in own)  # another attention block's tensors
    model.load_state_dict(loaded, strict=False)
    log.info("%s: loaded %d of %d tensors%s%s", path, len(loaded), len(own),
             f"; skipped (shape differs): {', '.join(differs)}" if differs else "",
             f"; skipped (not in this model): {', '.join(absent)}" if absent else "")
    if by_name:
        _heads_by_name(model, source, source_names, names, path)
    elif source_names and list(source_names) != list(names) and len(source_names) == len(names):
        log.warning("%s: its classes (%s) share no name with the data's (%s): the heads' class channels load "
                    "by position", path, ", ".join(source_names[:5]), ", ".join(names[:5]))


def _heads_by_name(model: YoloV4Tiny, source: YoloV4Tiny, source_names: Sequence[str], names: Sequence[str],
                   path: str) -> None:
    """Copy each anchor's box and objectness channels of both prediction convs, and the class channels of the
    classes ``source`` knows by name; the other classes keep their fresh start (``init_head_biases``)."""
    src_nc, nc = len(source_names), len(names)
    known = {name: j for j, name in enumerate(source_names)}
    carried = [(k, known[name]) for k, name in enumerate(names) if name in known]
    with torch.no_grad():
        for head in ("head_p5", "head_p4"):
            dst, src = getattr(model, head).pred, getattr(source, head).pred
            if dst.out_channels // (5 + nc) != src.out_channels // (5 + src_nc) or dst.in_channels != src.in_channels:
                log.warning("%s: %s has another anchor count: its prediction conv starts fresh", path, head)
                continue
            for a in range(dst.out_channels // (5 + nc)):
                rows = [(a * (5 + nc) + i, a * (5 + src_nc) + i) for i in range(5)]
                rows += [(a * (5 + nc) + 5 + k, a * (5 + src_nc) + 5 + j) for k, j in carried]
                for d, s in rows:
                    dst.weight[d] = src.weight[s]
                    dst.bias[d] = src.bias[s]
    new = [name for name in names if name not in known]
    log.info("%s: class channels by name: %d of %d classes carried over%s", path, len(carried), nc,
             f"; new: {', '.join(new[:10])}{', ...' if len(new) > 10 else ''}" if new else "")


def _resumable_run(path: Path, ckpt: Dict[str, Any]) -> Path:
    """The run folder a resumed checkpoint continues (``<run>/weights/last.pt``). Resuming writes there and
    cuts its results.csv back to the checkpoint's epoch, so a file elsewhere, or one older than the run's
    last.pt (its best.pt), is refused: either would overwrite what is not its own."""
    weights = path.resolve().parent
    run_dir = weights.parent
    new_run = f"; to train on from these weights in a new run: --weights {path}"
    if weights.name != "weights" or not (run_dir / "config.yaml").is_file():
        raise ValueError(f"{path}: not in a run folder (<run>/weights/last.pt beside <run>/config.yaml), "
                         f"which resuming writes to{new_run}")
    last = weights / "last.pt"
    if last.is_file() and not last.samefile(path):
        last_epoch = int(load_checkpoint(last, mmap=True).get("epoch", -1))
        if last_epoch > int(ckpt["epoch"]):
            raise ValueError(f"{path}: epoch {int(ckpt['epoch']) + 1}, but the run went on to epoch "
                             f"{last_epoch + 1} ({last}); resuming from it would discard the epochs after it: "
                             f"resume from {last}{new_run}")
    return run_dir


def _asked_attention(cfg: Dict[str, Any]) -> Dict[str, Any]:
    """The attention block and its options that the flags ask for, where they do (--attention, a --phi other
    than the default, --attention-kw), in the weights' terms: these replace what --weights hold (a --phi equal
    to the default cannot be told from none, and leaves the weights' own)."""
    asked: Dict[str, Any] = {}
    if cfg.get("attention") is not None or cfg["phi"] != load_train_config()["phi"]:
        asked["attention"] = resolve_attention(cfg["attention"] if cfg.get("attention") is not None else cfg["phi"])
    if cfg.get("attention_kw"):
        asked["attention_kw"] = dict(cfg["attention_kw"])
    return asked


def _as_kept(key: str, value: Any) -> Any:
    """A run keeps its --data and --root absolute, so that a resume started in another folder finds them."""
    named = key in ("data", "root") and isinstance(value, str) and value not in ("shapes", "default")
    return str(Path(value).resolve()) if named and Path(value).exists() else value


def _check_trainable(train_set, names: Sequence[str], where: str) -> None:
    """Refuse a train split that cannot teach anything, before a run folder is made: no images, no classes, or
    not one box (labels not where they were looked for; YOLOv5 refuses those too). Before, such runs went
    through their epochs and wrote weights that detect nothing."""
    problems = f" ({train_set.problems.summary()})" if len(getattr(train_set, "problems", ())) else ""
    if len(train_set) == 0:
        raise ValueError(f"{where}: the train split has no usable images{problems}; see "
                         f"`python tools/check_data.py --data {where}`")
    if not names:
        raise ValueError(f"{where}: no classes (empty `names`, or a COCO JSON without categories)")
    with_difficult = bool(getattr(train_set, "include_difficult", False))
    if not any(target_mask(r.difficult, with_difficult).any() for r in train_set.records):
        boxes = sum(len(r.labels) for r in train_set.records)
        if boxes and isinstance(train_set, COCODataset):
            raise ValueError(f"{where}: all {boxes} boxes of the train split's {len(train_set)} images are crowd "
                             f"regions (iscrowd 1), which are never training targets (as in COCO-trained "
                             f"detectors)")
        if boxes:  # every one difficult, which training leaves out by default
            raise ValueError(f"{where}: all {boxes} boxes of the train split's {len(train_set)} images are marked "
                             f"difficult, which training leaves out of its targets; set `train_difficult: true` "
                             f"in the data config to train on them")
        raise ValueError(f"{where}: not one box in the train split's {len(train_set)} images{problems}: are "
                         f"the label files missing where they were looked for ({train_set.description}), or "
                         f"empty? See `python tools/check_data.py --data {where}`")


def _num_classes_in(path: str) -> Optional[int]:
    """Class count of a port state dict from its head (port files carry no names)."""
    ckpt = load_checkpoint(path)
    if isinstance(ckpt, dict) and "meta" not in ckpt:
        head = strip_wrapper_prefixes(ckpt).get("yolo_headP5.1.bias")  # saved from DataParallel: module.yolo_...
        if isinstance(head, torch.Tensor):
            return int(head.shape[0]) // 3 - 5
    return None


def train(cfg: Dict[str, Any]) -> Path:
    """Run a training job described by a resolved config (see configs/train.yaml); returns the run folder."""
    world = int(os.environ.get("WORLD_SIZE", 1))
    rank = int(os.environ.get("RANK", 0))
    local_rank = int(os.environ.get("LOCAL_RANK", -1))
    resume_path = cfg.get("resume")
    ckpt = None
    ignored: List[str] = []
    if resume_path:
        ckpt = load_checkpoint(resume_path)
        if is_our_checkpoint(ckpt) and "epoch" in ckpt and "optimizer" not in ckpt:
            raise ValueError(f"{resume_path}: a run's best weights, kept without the optimizer's state: resume "
                             f"from {Path(resume_path).parent / 'last.pt'}, or train on from them in a new run "
                             f"with --weights {resume_path}")
        if not (is_our_checkpoint(ckpt) and "optimizer" in ckpt):
            raise ValueError(f"{resume_path}: not a training checkpoint of ours (last.pt of a run) to resume")
        keep = {k: cfg[k] for k in ("device", "workers") if cfg.get(k) is not None}
        # options set along with --resume, other than the defaults and the run's own, do not apply: said below
        defaults = load_train_config()
        # a time of None that an epochs flag brought along (load_train_config) is not an option of its own
        derived = {"time"} if cfg.get("time") is None and cfg.get("epochs") != defaults.get("epochs") else set()
        ignored = [f"{k}={cfg[k]}" for k in sorted(cfg) if k not in ("device", "workers", "resume", *derived)
                   and cfg[k] != defaults.get(k) and _as_kept(k, cfg[k]) != ckpt["config"].get(k)]
        cfg = dict(ckpt["config"], **keep, resume=resume_path)
    else:  # a resume from another folder finds the data where this run found it
        cfg = {**cfg, **{key: _as_kept(key, cfg.get(key)) for key in ("data", "root")}}
    if cfg.get("time") == "auto":
        cfg["time"] = EMBEDDED_TIME_BUDGET if cfg.get("data") is None else None
    if cfg.get("eval_img_size") == "auto":
        cfg["eval_img_size"] = EMBEDDED_EVAL_SIZE if cfg.get("data") is None else None
    check_input_size(cfg["img_size"], "img_size")
    if int(cfg["img_size"]) < 64:  # a 1x1 stride-32 map: BatchNorm fails on a batch of one image
        raise ValueError(f"img_size {cfg['img_size']}: training needs at least 64")
    eval_size = int(cfg.get("eval_img_size") or cfg["img_size"])
    check_input_size(eval_size, "eval_img_size")
    device = resolve_device(cfg["device"], local_rank if world > 1 else -1)
    if cfg.get("workers") in (None, "auto"):
        cfg["workers"] = auto_workers(device, world)
    if device.type == "cuda" and device.index is not None:
        # before the process group: NCCL's object broadcasts and barriers use the current GPU, cuda:0 on
        # every rank otherwise; and alone on cuda:1, the loader's pinning thread would open a context on cuda:0
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        # rank 0 validates, saves and plots alone while the others wait in the next collective: NCCL's 10-minute
        # default would kill a run whose validation (COCO val, early epochs at conf 0.001) takes longer
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=timedelta(hours=3))
    main = rank == 0
    logging.basicConfig(level=logging.INFO if main else logging.WARNING, format="%(message)s")
    if ignored and main:
        log.warning("resuming %s goes on with the run's own config; ignored: %s (only --device and --workers "
                    "apply; to train with other options, start a new run from it: --weights)", resume_path,
                    ", ".join(ignored))
    seed = int(cfg["seed"]) + rank
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)

    if ckpt is not None:
        run_dir = _resumable_run(Path(resume_path), ckpt)
        finished = int(ckpt.get("epochs", cfg["epochs"]))
        if int(ckpt["epoch"]) + 1 >= finished:  # before anything is written there
            log.info("%s: this run already finished all %d epochs", resume_path, finished)
            return run_dir

    data_cfg = load_data_config(cfg.get("data"), {"root": cfg["root"]} if cfg.get("root") else None)
    train_set = build_dataset(data_cfg, "train")
    if not data_cfg["names"] and train_set.names:
        # COCO without names: each split would number its JSON's categories its own way; val takes train's
        # classes by name, as tools/eval.py matches a model's
        data_cfg = {**data_cfg, "names": list(train_set.names)}
    val_set = build_dataset(data_cfg, "val") if main else None
    names = list(data_cfg["names"] or train_set.names)
    if cfg["single_cls"]:
        names = [SINGLE_CLASS]
        for dataset in (train_set, val_set):
            if dataset is not None:
                dataset.as_single_class(SINGLE_CLASS)
    _check_trainable(train_set, names, data_cfg.get("path") or "the data config")

    # The architecture comes from the checkpoint being resumed, else from --weights when they carry one
    # (our checkpoints, port files; Darknet's anchors from their .cfg), else from the config; the head is always
    # built for this dataset.
    source, source_names = _weights_source(cfg.get("weights"), cfg.get("classes")) if ckpt is None else (None, [])
    if ckpt is not None:
        arch = ckpt["meta"]["model"]
    elif source is not None and not str(cfg["weights"]).endswith(".weights"):  # Darknet's hold no attention
        keys = ("attention", "attention_kw", "anchors", "anchor_masks")
        arch = {k: v for k, v in source.config().items() if k in keys}
        for key, value in _asked_attention(cfg).items():  # flags that ask for another block than the weights'
            if value != arch[key]:
                log.warning("%s: the weights hold %s %s; building %s as asked (the tensors that fit load)",
                            cfg["weights"], key, arch[key] or "none", value or "none")
                del arch[key]
        if "attention" not in arch:  # another block: the weights' block options are not its own
            arch.pop("attention_kw", None)
    else:
        arch = _darknet_arch(cfg.get("weights"))
    attention = arch.get("attention", cfg.get("attention") if cfg.get("attention") is not None else cfg["phi"])
    anchors, masks = arch.get("anchors"), arch.get("anchor_masks")
    box_wh = box_sizes(train_set, cfg["img_size"]) if main or cfg.get("anchors") == "fit" else None
    if ckpt is None and (cfg.get("anchors") is not None or cfg.get("anchor_masks")):  # they replace the weights' own
        anchors, masks = anchors_from_config(cfg["anchors"], cfg.get("anchor_masks"), box_wh, cfg["anchor_t"],
                                             int(cfg["seed"]))
    model = build_model(attention, len(names), anchors, masks,
                        arch.get("attention_kw", cfg.get("attention_kw") or {}))
    if main:
        check_anchors([a for level in model.level_anchors() for a in level], box_wh, cfg["anchor_t"])
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
    else:
        init_head_biases(model, cfg["img_size"])
        if cfg.get("weights"):
            _init_weights(model, str(cfg["weights"]), source, source_names, names)
    model.to(device)
    if cfg["channels_last"]:
        model.to(memory_format=torch.channels_last)
    if world > 1 and cfg.get("sync_bn"):
        if device.type == "cuda":
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        elif main:
            log.warning("--sync-bn needs CUDA; training with per-process BatchNorm on %s", device)

    nc = len(names)
    loss_fn = build_loss(cfg, model).to(device)

    # batch_size is the total over the DDP processes, as in YOLOv5: the same run on 1 or N processes takes the
    # same steps (and a run resumed under another process count keeps its batches an epoch)
    if cfg["batch_size"] % world:
        raise ValueError(f"batch_size {cfg['batch_size']} is the batch over all {world} processes and must split "
                         f"evenly between them: give a multiple of {world}")
    loader = build_train_loader(train_set, img_size=cfg["img_size"], batch_size=cfg["batch_size"] // world,
                                workers=cfg["workers"], aug=cfg.get("aug") or {}, seed=cfg["seed"],
                                distributed=world > 1, pin_memory=device.type == "cuda")
    lr = cfg["lr"] * (cfg["batch_size"] / 64 if cfg["optimizer"] == "sgd" else 1.0)
    optimizer = build_optimizer(model, cfg["optimizer"], lr, cfg["momentum"], cfg["weight_decay"])
    epochs = int(cfg["epochs"])
    iters = len(loader)
    scheduler = WarmupCosine(optimizer, epochs * iters, _warmup_iters(cfg["warmup_epochs"], iters),
                             cfg["min_lr_ratio"], cfg["warmup_bias_lr"], 0.8 if cfg["optimizer"] == "sgd" else 0.9)
    ema = ModelEMA(model, cfg["ema_decay"], cfg["ema_tau"]) if cfg["ema"] and main else None
    amp_dtype = _amp_dtype(cfg["amp"], device)
    keep_freed_memory()  # large activations are not faulted in again at every step (12-16 % on a CPU)
    scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None

    # The run folder once data, model, loss, loader and optimizer are set up: a mistake in any of them
    # leaves no empty run behind
    reused = False  # an earlier run's folder, written into again (exist_ok)
    if ckpt is None:
        base = Path(str(cfg["project"])) / str(cfg["name"])
        run_dir, reused = _new_run_folder(base, bool(cfg.get("exist_ok"))) if main else (None, False)
        if world > 1:
            holder = [str(run_dir) if main else None]
            dist.broadcast_object_list(holder, src=0)
            run_dir = Path(holder[0])
    weights_dir = run_dir / "weights"
    earlier: Dict[Path, os.stat_result] = {}  # an earlier run's weights in a reused folder, until the first save
    if main:
        weights_dir.mkdir(parents=True, exist_ok=True)
        if ckpt is not None:
            _trim_csv(run_dir / "results.csv", ckpt["epoch"] + 1)
        elif reused:
            earlier = _start_afresh(run_dir, weights_dir)
        write_atomic(run_dir / "config.yaml", yaml.safe_dump(cfg, sort_keys=False).encode())

    start_epoch, best, best_epoch, elapsed_before = 0, -1.0, -1, 0.0
    epoch_times: List[float] = []  # of epochs done, each with its evaluation and the previous one's saving
    if ckpt is not None:
        try:
            load_optimizer_state(optimizer, ckpt["optimizer"])
        except ValueError as e:  # torch's message names neither the file nor a way on
            raise ValueError(f"{resume_path}: its optimizer state does not fit this version's model ({e}): the "
                             f"network changed since the run started (e.g. phi 5's GC block gained a bias), so "
                             f"it cannot resume; train on from its weights instead: --weights {resume_path}") from None
        scheduler.load_state_dict(ckpt["scheduler"])
        _schedule_in_epochs(scheduler, int(ckpt["epoch"]) + 1, iters, int(ckpt.get("epochs", epochs)))
        if scaler is not None and ckpt.get("scaler"):
            scaler.load_state_dict(ckpt["scaler"])
        if ema is not None and ckpt.get("ema") is not None:
            ema.module.load_state_dict(ckpt["ema"])
            ema.updates = int(ckpt.get("ema_updates", 0))
        start_epoch = int(ckpt["epoch"]) + 1
        epochs = int(ckpt.get("epochs", epochs))
        best = float(ckpt.get("best_fitness", -1.0))
        # a checkpoint from before best_epoch was kept: patience counts from the resumed epoch
        best_epoch = int(ckpt.get("best_epoch", start_epoch - 1))
        if (weights_dir / "best.pt").is_file():  # written before last.pt: it may hold a better epoch
            saved = load_checkpoint(weights_dir / "best.pt", mmap=True)
            if float(saved.get("best_fitness", -1.0)) > best:
                best, best_epoch = float(saved["best_fitness"]), int(saved.get("epoch", best_epoch))
        elapsed_before = float(ckpt.get("elapsed_s", 0.0))
        epoch_times = [float(t) for t in ckpt.get("epoch_times", [])]
        if len(epoch_times) != start_epoch:  # a checkpoint from before epoch_times were saved
            epoch_times = [elapsed_before / start_epoch] * start_epoch
        ranks = ckpt.get("rng_ranks") or []
        # each rank continues its own random stream; under another world size, rank 0 continues its own and
        # the others keep their fresh seeds (seed + rank), never rank 0's stream
        if len(ranks) == world:
            _set_rng_state(ranks[rank], device)
        elif main:
            _set_rng_state(ckpt["rng"], device)
        log.info("resuming %s at epoch %d of %d", resume_path, start_epoch + 1, epochs)

    train_model = model
    if world > 1:
        train_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=cfg["freeze_epochs"] > 0)
    if cfg.get("compile"):
        train_model = torch.compile(train_model)

    if main:
        log.info("training %s (phi %d, %s) on %d images, %d classes, %d epochs, batch %d, img %d, device %s%s, %s "
                 "-> %s", type(model).__name__, model.phi, model.attention or "no attention", len(train_set), nc,
                 epochs, cfg["batch_size"], cfg["img_size"], device,
                 f" x{world} ({cfg['batch_size'] // world} per process)" if world > 1 else "",
                 _precision(amp_dtype, cfg["amp"], device), run_dir)
    # COCO data is scored against its own JSONs, crowd regions and mask areas included, as tools/eval.py does
    coco_gt = (load_coco_ground_truth(val_set.annotation_files, val_set.id_prefixes)
               if main and getattr(val_set, "format", None) == "coco" and not cfg["single_cls"] else None)
    t0 = time.time() - elapsed_before
    lap = time.time()
    epoch = start_epoch - 1
    with _interruption_note(run_dir, weights_dir, main, ckpt is None and not reused, earlier):
        while epoch + 1 < epochs:  # not a for-range: a time budget may change `epochs` in the first epochs
            epoch += 1
            if hasattr(loader.sampler, "set_epoch"):
                loader.sampler.set_epoch(epoch)
            if hasattr(loader.dataset, "set_epoch"):
                loader.dataset.set_epoch(epoch)
            if hasattr(loader.dataset, "close_mosaic"):
                # Decided every epoch against the current count, which a time budget re-fits in the first epochs
                # (a short --epochs may grow): reopened when a fit moved the last epochs away. Before the first
                # fit the count is not the budget's yet, so that epoch keeps mosaic.
                unfitted = cfg.get("time") and epoch == 0
                if epoch >= epochs - cfg["close_mosaic"] and not unfitted:
                    loader.dataset.close_mosaic()
                else:
                    loader.dataset.open_mosaic()
            frozen = epoch < cfg["freeze_epochs"]
            for p in model.backbone.parameters():
                p.requires_grad_(not frozen)
            epoch_start = time.time()
            stats = train_one_epoch(train_model, loader, loss_fn, optimizer, scheduler, ema, device, epoch, epochs,
                                    amp_dtype, scaler, cfg["grad_clip"], cfg["channels_last"], cfg["multi_scale"],
                                    cfg["img_size"], verbose=main)
            last = epoch == epochs - 1
            metrics, eval_error = {}, None
            if main and (last or (epoch + 1) % cfg["eval_interval"] == 0):
                eval_model = ema.module if ema is not None else model
                try:
                    result = evaluate(eval_model, val_set, img_size=eval_size, batch_size=cfg["eval_batch_size"],
                                      conf_threshold=cfg["eval_conf"], iou_threshold=cfg["eval_iou"],
                                      metrics=("voc07", "voc12", "coco"), device=device, amp_dtype=amp_dtype,
                                      scale_x_y=loss_fn.scale_x_y, max_candidates=3000, output_dir=run_dir / "val",
                                      save_json=False, verbose=True, coco_gt=coco_gt)
                except Exception as e:  # raised once the epoch's weights are saved: its training is not lost with it
                    eval_error = e
                else:
                    print_report(result)
                    metrics = {"map50": result["voc12_map50"], "map50_95": result["coco_map"],
                               "voc07_map50": result["voc07_map50"], "precision": result.get("precision", math.nan),
                               "recall": result.get("recall", math.nan)}
            now = time.time()
            epoch_times.append(now - lap)
            lap = now
            if cfg.get("time") and epoch < FIT_EPOCHS and (not last or epoch == 0):  # epoch 0: never fitted yet
                # before the checkpoint, so that a run resumed from it keeps the fitted count and schedule (and
                # goes on fitting from the elapsed time it restores)
                epochs = _fit_epochs_to_time(cfg["time"], now - t0, epoch_times, world, device)
                scheduler.set_total(epochs * iters)
            rng_states = _rng_states(device, world)
            if main:
                # every process trains as many images as this one, in the same time
                stats["images_per_s"] *= world
                row = {"epoch": epoch + 1, **stats, **metrics, "epoch_time_s": time.time() - epoch_start,
                       "elapsed_s": time.time() - t0}
                # the row before the checkpoint: a run killed in between resumes from the previous checkpoint,
                # which drops this row (_trim_csv) and trains the epoch again; in the other order the row of an
                # epoch whose checkpoint was written would be lost
                _append_csv(run_dir / "results.csv", row)
                score = fitness(metrics) if metrics else -1.0
                if math.isnan(score):  # a val split without boxes: nothing to choose by, best.pt follows the latest
                    is_best = True
                else:
                    is_best = score > best
                    best = max(best, score)
                if is_best and metrics:
                    best_epoch = epoch
                # YOLOv5's early stop: no better fitness in the last `patience` epochs. The checkpoint then says the
                # run is finished (a --resume of it has nothing left to do).
                stop = bool(cfg["patience"]) and bool(metrics) and not last and epoch - best_epoch >= cfg["patience"]
                if stop:
                    epochs = epoch + 1
                state = {
                    "meta": make_meta(model, names, eval_size, loss_fn.scale_x_y),  # what predict and eval use
                    "model": {k: v.detach().float().cpu() if v.is_floating_point() else v.cpu()
                              for k, v in model.state_dict().items()},
                    # on the CPU, as "model": a plain torch.load of best.pt works on machines without a GPU
                    "ema": _to_cpu(ema.module.state_dict()) if ema is not None else None,
                    "ema_updates": ema.updates if ema is not None else 0,
                    "config": cfg, "optimizer": _to_cpu(optimizer.state_dict()), "scheduler": scheduler.state_dict(),
                    "scaler": scaler.state_dict() if scaler is not None else None,
                    "epoch": epoch, "epochs": epochs, "epoch_times": list(epoch_times), "best_fitness": best,
                    "best_epoch": best_epoch,
                    "metrics": metrics, "elapsed_s": time.time() - t0, "rng": rng_states[0], "rng_ranks": rng_states,
                }
                # best.pt before last.pt: a kill in between resumes from the previous last.pt and trains the epoch
                # again, whereas in the other order last.pt would hold a best fitness that best.pt never got
                if is_best and metrics:  # without the optimizer's state (half the file): best.pt is not resumed
                    save_checkpoint({k: v for k, v in state.items() if k not in ("optimizer", "scaler")},
                                    weights_dir / "best.pt")
                    for png in (run_dir / "val").glob("*.png"):  # the PR curve of the best epoch so far
                        write_atomic(run_dir / f"best_{png.name}", png.read_bytes())
                # this run's first checkpoint: what of the earlier run's it does not replace goes (a best.pt of
                # the earlier run would otherwise be taken for this run's best by a resume)
                for path in earlier:
                    if path.name != "last.pt" and _is_earlier(path, earlier):
                        path.unlink()
                earlier = {}
                save_checkpoint(state, weights_dir / "last.pt")
                if cfg["save_period"] and (epoch + 1) % cfg["save_period"] == 0:  # a full checkpoint, as last.pt
                    save_checkpoint(state, weights_dir / f"epoch{epoch + 1}.pt")
                plot_results(run_dir / "results.csv", run_dir / "results.png")
                if eval_error is not None:
                    on = "" if last else f"go on with --resume {weights_dir / 'last.pt'}, or "
                    log.error("epoch %d: the evaluation failed (below); the epoch's weights are in %s: %sscore them "
                              "with tools/eval.py", epoch + 1, weights_dir / "last.pt", on)
                    raise eval_error
                if stop:
                    log.info("stopping early: no better fitness in the %d epochs since epoch %d (patience %d); "
                             "best.pt holds that epoch", epoch - best_epoch, best_epoch + 1, cfg["patience"])
            if world > 1:  # every rank stops with the main one (a tensor on the device: NCCL takes only GPU tensors)
                count = torch.tensor([epochs], device=device)
                dist.broadcast(count, 0)
                epochs = int(count)
    if main:
        log.info("done: %d epochs in %.1f min; best fitness %.4f; weights in %s", epochs,
                 (time.time() - t0) / 60, best, weights_dir)
        _warn_constant_gates(ema.module if ema is not None else model, val_set, eval_size, device)
    if world > 1:
        dist.destroy_process_group()
    return run_dir


def _new_run_folder(path: Path, exist_ok: bool) -> Tuple[Path, bool]:
    """The folder of a new run and whether an earlier one made it: ``path`` itself with ``exist_ok`` (made when
    missing), else the first free of ``path``, ``path2``, ... claimed as it is named."""
    reused = exist_ok and path.is_dir()
    path = results_folder(path, exist_ok)
    if reused:
        log.info("%s exists: this run writes into it (exist_ok); results.csv starts afresh, and the weights there "
                 "are replaced as the run saves its own", path)
    return path, reused


def _start_afresh(run_dir: Path, weights_dir: Path) -> Dict[Path, os.stat_result]:
    """Make an earlier run's folder ready for a new run (exist_ok): its log, results.csv (appended to by each
    epoch) and the plot of it go now. Its last.pt, best.pt and best-epoch plots stay until the new run's first
    checkpoint replaces them: they are returned, with their state now, for that. Its --save-period snapshots
    (epoch<N>.pt, replaced only where the new run saves the same epoch) and the user's own files stay."""
    for name in ("results.csv", "results.png"):
        (run_dir / name).unlink(missing_ok=True)
    kept = [weights_dir / "last.pt", weights_dir / "best.pt",
            *(run_dir / f"best_{png.name}" for png in (run_dir / "val").glob("*.png"))]
    return {path: path.stat() for path in kept if path.is_file()}


def _is_earlier(path: Path, earlier: Dict[Path, os.stat_result]) -> bool:
    """Whether ``path`` is still the earlier run's file that ``earlier`` saw (write_atomic's rename gives a file
    written since a new inode)."""
    try:
        return path in earlier and os.path.samestat(earlier[path], path.stat())
    except FileNotFoundError:
        return False


@contextmanager
def _interruption_note(run_dir: Path, weights_dir: Path, main: bool, new_folder: bool,
                       earlier: Dict[Path, os.stat_result]) -> Iterator[None]:
    """Ctrl-C in the epochs: the KeyboardInterrupt goes on with a message that says what is kept. A new run
    stopped in its first epoch has nothing to resume: the folder it made (the config alone) is taken back, so
    that the name is free again. ``earlier``: an earlier run's weights in a reused folder, not this run's."""
    try:
        yield
    except KeyboardInterrupt:
        if not main:
            raise
        last = weights_dir / "last.pt"
        if last.is_file() and not _is_earlier(last, earlier):
            epoch = int(load_checkpoint(last, mmap=True)["epoch"]) + 1
            raise KeyboardInterrupt(f"epoch {epoch}, the last completed, is in {last}: resume with --resume "
                                    f"{last}") from None
        if new_folder and {p.name for p in run_dir.iterdir()} <= {"config.yaml", "weights", "val"} \
                and not any(weights_dir.iterdir()):
            shutil.rmtree(run_dir, ignore_errors=True)
            raise KeyboardInterrupt(f"in the first epoch, before any weights were saved; {run_dir} removed") from None
        theirs = " (those there are an earlier run's)" if earlier else ""
        raise KeyboardInterrupt(f"before any weights were saved in {weights_dir}{theirs}") from None


def _schedule_in_epochs(scheduler: WarmupCosine, epochs_done: int, iters: int, epochs: int) -> None:
    """A resumed schedule, counted in iterations, kept at the same point in epochs when an epoch now has another
    number of batches than when the run started (another DDP process count, images added or removed): else its
    cosine would end early or never finish."""
    if epochs_done < 1 or scheduler.iteration == epochs_done * iters:
        return
    before = scheduler.iteration / epochs_done  # the run resumes at an epoch's end: a whole number of epochs done
    log.info("an epoch is now %d batches, %g when the run started (another process count or dataset size): the "
             "schedule keeps its place in epochs", iters, before)
    scheduler.warmup_iters = round(scheduler.warmup_iters * iters / before)
    scheduler.iteration = epochs_done * iters
    scheduler.set_total(epochs * iters)


def _warn_constant_gates(model: YoloV4Tiny, dataset, img_size: int, device: torch.device, count: int = 8) -> None:
    """Say so when attention blocks' channel gates ended up one value on every channel of a few val images
    (an SE / CBAM MLP with every hidden unit off): their channel half then does nothing, which a user comparing
    phi values should know. Every phi 2 run on the embedded dataset under the default AdamW recipe ends like
    this (README, "The network")."""
    if not model.attention:
        return
    images = []
    for i in range(min(count, len(dataset))):
        try:
            images.append(letterbox(dataset.load_record(i).image, img_size)[0])
        except BadImageError:  # reported when the dataset was read; any few images will do here
            continue
    if not images:
        return
    batch = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float().div(255).to(device)
    constant = constant_channel_gates(model, batch)
    if constant:
        rest = " (CBAM's spatial gate still acts)" if model.attention == "cbam" else ""
        log.warning("%s attention in %s: the channel gate is %s on every channel of %d val images (every hidden "
                    "unit of the channel MLP is off), a constant scale the next convolution absorbs; the channel "
                    "gate does nothing in this model%s", model.attention, ", ".join(constant),
                    "/".join(sorted({f"{v:.3f}" for v in constant.values()})), len(images), rest)


def _fit_epochs_to_time(minutes: float, elapsed: float, epoch_times: Sequence[float], world: int,
                        device: torch.device = torch.device("cpu")) -> int:
    """Epoch count that fills a wall-clock budget: the epochs done, plus as many more as the rest of the budget
    holds at the mean time of those done (with their evaluations). Re-fitted after each of the first
    ``FIT_EPOCHS`` epochs, while the cosine schedule has barely moved: the first epoch alone misjudges the
    rest by 5-15 % either way (kernel set-up and a slow first evaluation; a machine that slows down).
    Under DDP every rank takes rank 0's count, broadcast from ``device`` (NCCL takes only GPU tensors)."""
    # Whole epochs (the schedule's end, close_mosaic and evaluation are per epoch); a last epoch that would end
    # within a tenth of an epoch past the budget still counts, so a budget a hair short of N epochs keeps N.
    done = len(epoch_times)
    per_epoch = max(sum(epoch_times) / done, 1e-6)
    fitted = max(done + 1, done + int((minutes * 60 - elapsed) / per_epoch + 0.1))
    if world > 1:
        t = torch.tensor([fitted], device=device)
        dist.broadcast(t, 0)
        fitted = int(t)
    log.info("time budget %.1f min: %.1f min used, %.1f s per epoch -> %d epochs", minutes, elapsed / 60,
             per_epoch, fitted)
    return fitted


def _trim_csv(path: Path, epochs_done: int) -> None:
    """Drop results rows of epochs a resumed run will train again (killed after an epoch's row, before its
    checkpoint)."""
    if not path.exists():
        return
    with open(path, newline="") as f:
        rows = [r for r in csv.DictReader(f) if int(r["epoch"]) <= epochs_done]
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=RESULT_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    write_atomic(path, text.getvalue())


def _append_csv(path: Path, row: Dict[str, Any]) -> None:
    new = not path.exists()
    with open(path, "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=RESULT_COLUMNS, extrasaction="ignore")
        if new:
            writer.writeheader()
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
