"""Training curves: results.csv -> results.png."""
from __future__ import annotations

import csv
from pathlib import Path

__all__ = ["plot_results"]


def plot_results(csv_path: Path, png_path: Path) -> None:
    """One panel per column of results.csv (loss terms, lr, mAPs, speed) against the epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return
    columns = [c for c in rows[0] if c not in ("epoch", "elapsed_s")]
    epochs = [int(r["epoch"]) for r in rows]
    fig, axes = plt.subplots(2, (len(columns) + 1) // 2, figsize=(3.2 * ((len(columns) + 1) // 2), 6))
    for ax, col in zip(axes.ravel(), columns):
        points = [(e, float(r[col])) for e, r in zip(epochs, rows) if r.get(col) not in (None, "")]
        if points:
            ax.plot(*zip(*points), marker=".")
        ax.set_title(col)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    for ax in axes.ravel()[len(columns):]:
        ax.axis("off")
    fig.tight_layout()
    tmp = png_path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(png_path)
