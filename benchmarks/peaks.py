"""What this CPU can do at best: large matrix products in fp32, bf16 and int8, with torch's oneDNN kernels.

The network's limit at each precision is its FLOPs over these peaks (6.9 GFLOP per 416 image): a measured
forward far above that limit leaves room; one near it does not.

    python benchmarks/peaks.py [--size 2048] [--seconds 2]
"""
from __future__ import annotations

import argparse
import sys
import time

import torch


def peak(dtype: torch.dtype, size: int, seconds: float) -> float:
    """Operations per second (2 per multiply-accumulate) of size x size matrix products."""
    if dtype == torch.int8:
        a = torch.randint(-64, 64, (size, size), dtype=torch.int8)
        b = torch.randint(-64, 64, (size, size), dtype=torch.int8)
        op = lambda: torch._int_mm(a, b)  # noqa: E731 - int8 in, int32 out (VNNI / AMX-INT8)
    else:
        a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
        op = lambda: a @ b  # noqa: E731
    for _ in range(3):
        op()
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        op()
        count += 1
    return 2.0 * size**3 * count / (time.perf_counter() - start)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=2048)
    p.add_argument("--seconds", type=float, default=2.0)
    p.add_argument("--gflop", type=float, default=6.908, help="the network's GFLOP per image")
    args = p.parse_args(argv)
    from yolo_attn.inference.benchmark import machine_summary

    print(machine_summary())
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16), ("int8", torch.int8)):
        ops = peak(dtype, args.size, args.seconds)
        print(f"{name}: {ops / 1e9:7.0f} GOP/s -> the network at this peak: {1e3 * args.gflop * 1e9 / ops:.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
