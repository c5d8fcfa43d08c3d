"""Does the memory allocator matter? Run the same benchmark under glibc's defaults, glibc tuned by environment
variables, jemalloc and tcmalloc (LD_PRELOAD), each in a fresh process, and compare the key rows.

glibc gives buffers above MALLOC_MMAP_THRESHOLD_ (128 KiB at first, adapting upwards) their own mmap and
unmaps them on free, so every forward pass can fault its activations in again; the settings below keep them.
Every tool applies the second row itself (yolo_attn.inference.hardware.keep_freed_memory, mallopt at run time);
the first row turns that off.

    python benchmarks/allocators.py [--rounds 10] [--backends torch openvino] [--weights best.pt]

Needs the libraries for the LD_PRELOAD rows (Debian/Ubuntu: apt-get install libjemalloc2 libtcmalloc-minimal4);
rows whose library is missing are skipped.
"""
from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict, List

ROOT = Path(__file__).resolve().parents[1]
LIBS = Path("/usr/lib/x86_64-linux-gnu")
SETTINGS: Dict[str, Dict[str, str]] = {
    "glibc defaults": {"YOLO_ATTN_MALLOC": "0"},
    "keep_freed_memory (mallopt; the default)": {},
    "glibc, no trim / mmap threshold 1 GiB (environment)": {
        "MALLOC_TRIM_THRESHOLD_": str(2**40), "MALLOC_MMAP_THRESHOLD_": str(2**30), "MALLOC_ARENA_MAX": "2"},
    "jemalloc (LD_PRELOAD)": {"LD_PRELOAD": str(LIBS / "libjemalloc.so.2"),
                              "MALLOC_CONF": "background_thread:true,dirty_decay_ms:10000,muzzy_decay_ms:10000"},
    "tcmalloc (LD_PRELOAD)": {"LD_PRELOAD": str(LIBS / "libtcmalloc_minimal.so.4")},
}
KEY_VARIANTS = ("baseline", "channels-last BN folded", "openvino fp32", "openvino int8 (NNCF)", "bf16 channels-last")


def main(argv: List[str] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--backends", nargs="+", default=["torch", "openvino"])
    p.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    p.add_argument("--weights")
    args = p.parse_args(argv)
    table: Dict[str, Dict[str, str]] = {}
    for label, env in SETTINGS.items():
        preload = env.get("LD_PRELOAD")
        if preload and not Path(preload).is_file():
            print(f"skipping {label}: {preload} not found")
            continue
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "r.csv"
            cmd = [sys.executable, str(ROOT / "tools" / "benchmark.py"), "--rounds", str(args.rounds),
                   "--csv", str(out), "--backends", *args.backends, "--batch", *map(str, args.batch)]
            if args.weights:
                cmd += ["--weights", args.weights]
            print(f"== {label}", flush=True)
            subprocess.run(cmd, env={**os.environ, **env}, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
            with open(out) as f:
                machine = f.readline().strip("# \n")
                for row in csv.DictReader(f):
                    if any(k in row["variant"] for k in KEY_VARIANTS) and "workers" not in row["variant"]:
                        table.setdefault(f"{row['variant']} b{row['batch']}", {})[label] = row["ms_median"]
        print(f"   {machine}")
    labels = [l for l in SETTINGS if any(l in r for r in table.values())]
    print("\n| variant, batch | " + " | ".join(labels) + " |")
    print("|---|" + "---:|" * len(labels))
    for name, row in table.items():
        print(f"| {name} | " + " | ".join(row.get(l, "") for l in labels) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
