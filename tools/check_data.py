#!/usr/bin/env python
"""Check a dataset: print every problem with its file and reason, then a summary.

    python tools/check_data.py --data configs/voc.yaml [--split train val] [--no-decode]

Exit status 0 when no problem was found, 1 when some were (2: the config itself could not be read). YOLO images
without a label file are listed but are no problem (background images), unless a split has not one box.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from yolo_attn.data.check import check_data, load_check_config  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=None, help="data config YAML (default: the embedded shapes dataset)")
    parser.add_argument("--split", nargs="+", default=None, help="splits to check (default: train val [test])")
    parser.add_argument("--root", default=None, help="override the config's dataset root")
    parser.add_argument("--no-decode", action="store_true", help="annotations and folders only; skip decoding")
    parser.add_argument("--workers", type=int, default=2, help="threads decoding images")
    parser.add_argument("--max-lines", type=int, default=None, help="at most this many lines per kind")
    args = parser.parse_args(argv)
    try:
        cfg = load_check_config(args.data, args.root, args.split)  # only the splits checked must be there
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    report = check_data(cfg, args.split, decode=not args.no_decode, workers=args.workers,
                        progress=sys.stderr.isatty())
    print(report.format(args.max_lines))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
