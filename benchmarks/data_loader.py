#!/usr/bin/env python
"""Training-loader throughput: images/s delivered by build_train_loader (mosaic + mixup + albumentations).

    python benchmarks/data_loader.py [--data CONFIG] [--img-size 416] [--batch-size 8] [--workers 2]
                                     [--batches 60] [--cache auto|ram|none] [--mixup 0.1] [--train-steps 20]

Prints images/s through the DataLoader alone; the CPU cost of one sample in one process (what a 2-core
machine shares with training); and, with --train-steps, images/s of a bf16 training step of the model fed
(a) one fixed synthetic batch and (b) the loader, side by side: (b) close to (a) means the loader keeps up.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from yolo_attn.data import build_dataset, build_train_loader, load_data_config, measure_loader  # noqa: E402


def train_steps(loader, steps: int, synthetic: bool, num_classes: int) -> float:
    """Images/s of forward + backward + AdamW step (bf16 autocast, channels-last) on loader batches."""
    from yolo_attn.models import build_model

    model = build_model(phi=0, num_classes=num_classes).to(memory_format=torch.channels_last).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    it = iter(loader)
    fixed = next(it)[0]
    count, start = 0, None
    for step in range(steps + 2):  # two warm-up steps
        if step == 2:
            count, start = 0, time.perf_counter()
        images = fixed if synthetic else next(it)[0]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = sum(o.float().square().mean() for o in model(images.to(memory_format=torch.channels_last)))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        count += images.shape[0]
    return count / (time.perf_counter() - start)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=None)
    p.add_argument("--img-size", type=int, default=416)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--batches", type=int, default=60)
    p.add_argument("--cache", default="auto")
    p.add_argument("--mixup", type=float, default=None, help="mixup probability (default: the loader's)")
    p.add_argument("--train-steps", type=int, default=0, help="also time this many training steps")
    args = p.parse_args(argv)
    ds = build_dataset(load_data_config(args.data), "train")
    aug = {} if args.mixup is None else {"mixup": args.mixup}
    start = time.perf_counter()
    loader = build_train_loader(ds, args.img_size, args.batch_size, args.workers, aug, cache=args.cache)
    print(f"loader built in {time.perf_counter() - start:.1f} s ({len(ds)} images, cache={args.cache}, "
          f"aug={loader.dataset.aug})")
    r = measure_loader(loader, args.batches)
    print(f"loader alone, {args.workers} workers: {r['images_per_s']:.1f} images/s "
          f"({r['images']} images in {r['seconds']:.1f} s)")
    if args.train_steps:
        synthetic = train_steps(loader, args.train_steps, True, len(ds.names))
        fed = train_steps(loader, args.train_steps, False, len(ds.names))
        print(f"training step, batch {args.batch_size}: {synthetic:.1f} images/s on a fixed batch, "
              f"{fed:.1f} images/s fed by the loader ({fed / synthetic:.0%})")
    del loader  # stop its workers before the single-process measurement
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    single = build_train_loader(ds, args.img_size, args.batch_size, 0, aug, cache=args.cache)
    start_cpu = time.process_time()
    r0 = measure_loader(single, max(5, args.batches // 4), warmup=0)
    cpu_ms = (time.process_time() - start_cpu) * 1e3 / r0["images"]
    print(f"one process, one thread: {r0['images_per_s']:.1f} images/s, {cpu_ms:.1f} ms CPU per image")


if __name__ == "__main__":
    main()
