"""Precision-recall curves as a PNG (matplotlib's Agg canvas: no display, no pyplot global state)."""
from __future__ import annotations

import io
import math
import os
from typing import Sequence, Union

import numpy as np

from ..utils.paths import write_atomic
from .voc import interpolated_precision

__all__ = ["plot_confusion_matrix", "plot_pr_curves"]


def plot_pr_curves(
    recall: Sequence[np.ndarray],
    precision: Sequence[np.ndarray],
    ap: Sequence[float],
    names: Sequence[str],
    path: Union[str, os.PathLike],
    title: str = "Precision-recall",
) -> None:
    """One curve per class with ground truth (legend with its AP up to 20 classes) and, in bold, their mean,
    labelled with the mAP. ``recall``/``precision`` are a class's ranked cumulative values (as
    :func:`~yolo_attn.eval.voc.evaluate_detections` returns them). Written atomically to ``path``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 6), tight_layout=True)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    valid = [c for c in range(len(names)) if not math.isnan(ap[c])]
    grid = np.linspace(0.0, 1.0, 101)
    legend = len(valid) <= 20
    # Each curve is the monotone precision envelope, the curve whose area is the (VOC2010+) AP.
    envelopes = {c: interpolated_precision(recall[c], precision[c], grid) for c in valid}
    for c in valid:
        ax.plot(grid, envelopes[c], linewidth=1, alpha=0.8 if legend else 0.3, color=None if legend else "grey",
                label=f"{names[c]} {ap[c]:.3f}" if legend else None)
    if valid:
        mean = np.mean([envelopes[c] for c in valid], axis=0)
        ax.plot(grid, mean, linewidth=3, color="blue", label=f"all classes {np.mean([ap[c] for c in valid]):.3f} mAP")
    ax.set_xlabel("Recall")
    ax.set_ylabel("Precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_title(title if valid else f"{title} (no ground truth)")
    if valid:
        ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1), fontsize="small", frameon=False)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=150)
    write_atomic(path, buf.getvalue())


def plot_confusion_matrix(matrix: np.ndarray, names: Sequence[str], path: Union[str, os.PathLike],
                          conf: float, iou: float) -> None:
    """The confusion matrix (rows predicted, columns true, background last) with each true class's column
    normalized to 1, as YOLOv5 draws it; counts are written in the cells up to 20 classes. Atomically."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    n = len(names) + 1
    totals = matrix.sum(axis=0, keepdims=True)
    shares = np.divide(matrix, totals, out=np.zeros(matrix.shape, dtype=np.float64), where=totals > 0)
    side = min(4.0 + 0.4 * n, 24.0)
    fig = Figure(figsize=(side + 1.5, side), tight_layout=True)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    image = ax.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    labels = [*names, "background"]
    if n <= 101:  # names on both axes up to 100 classes (COCO's 80 included), smaller as they grow
        size = "small" if n <= 31 else 4 if n <= 61 else 3
        ax.set_xticks(range(n), labels, rotation=90, fontsize=size)
        ax.set_yticks(range(n), labels, fontsize=size)
    if n <= 21:
        for i in range(n):
            for j in range(n):
                if matrix[i, j]:
                    ax.text(j, i, f"{shares[i, j]:.2f}\n{matrix[i, j]}", ha="center", va="center", fontsize=7,
                            color="white" if shares[i, j] > 0.5 else "black")
    ax.set_xlabel("True")
    ax.set_ylabel("Predicted")
    ax.set_title(f"Confusion matrix (score > {conf:g}, IoU > {iou:g}; columns sum to 1)")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=150)
    write_atomic(path, buf.getvalue())
