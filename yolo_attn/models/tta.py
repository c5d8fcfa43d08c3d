"""Test-time augmentation (YOLOv5's ``--augment``): the network sees each image at several scales, some of
them mirrored; every view's boxes are mapped back into the input's pixels and pooled, and one NMS over the
pool keeps the best. It costs one forward per view (about 1 + 1.3^2 + 0.83^2 = 3.4x with the default views).

Why several scales help a YOLO: one input size trades small objects against large ones (an object must be
a few cells of the stride-16 head to be found, and must fit the anchors of the stride-32 head), so views
at smaller sizes recover large objects and a mirrored view averages out left-right bias of a short training.

A view's size is the input's scaled and rounded to a multiple of 32 (each side separately); boxes are
scaled back by the exact ratio of each side, so the rounding costs nothing in accuracy.
"""
from __future__ import annotations

from typing import Callable, List, Sequence, Tuple

import torch
import torch.nn.functional as F

from .decode import decode_outputs

__all__ = ["DEFAULT_FLIPS", "DEFAULT_SCALES", "augmented_decode", "check_views", "view_shape"]

# The views: the input size, a larger one (small objects) mirrored, a smaller one (large objects). YOLOv5 uses
# (1, 0.83, 0.67) for models validated at their training size; ours are validated above it (320 -> 416 on the
# embedded dataset), where adding a larger view gained 4 points of mAP@0.5 and YOLOv5's views lost 0.5
# (README, Evaluation).
DEFAULT_SCALES = (1.0, 1.3, 0.83)
DEFAULT_FLIPS = (False, True, False)

Run = Callable[[torch.Tensor], Sequence[torch.Tensor]]


def check_views(scales: Sequence[float], flips: Sequence[bool]) -> List[Tuple[float, bool]]:
    """The (scale, flip) pairs of the views; a clear error for mismatched or invalid settings."""
    scales, flips = [float(s) for s in scales], [bool(f) for f in flips]
    if not scales:
        raise ValueError("test-time augmentation needs at least one scale")
    if len(flips) != len(scales):
        raise ValueError(f"test-time augmentation: {len(scales)} scales but {len(flips)} flips; give one flip "
                         f"flag per scale")
    if any(not 0.1 <= s <= 4.0 for s in scales):
        raise ValueError(f"test-time augmentation scales must be in [0.1, 4], got {scales}")
    return list(zip(scales, flips))


def view_shape(shape: Tuple[int, int], scale: float, stride: int = 32) -> Tuple[int, int]:
    """(h, w) scaled and rounded to the nearest multiple of ``stride`` (at least one stride)."""
    return tuple(max(stride, int(round(side * scale / stride)) * stride) for side in shape)  # type: ignore


def augmented_decode(
    run: Run,
    batch: torch.Tensor,
    level_anchors: Sequence[Sequence[Tuple[float, float]]],
    strides: Sequence[int] = (32, 16),
    scale_x_y: float = 1.05,
    scales: Sequence[float] = DEFAULT_SCALES,
    flips: Sequence[bool] = DEFAULT_FLIPS,
) -> torch.Tensor:
    """Decoded boxes of every view of ``batch``, in ``batch``'s pixels.

    Args:
        run: float batch (B, 3, h, w) -> raw head maps (the model, or a backend that accepts any size).
        batch: the letterboxed float batch (B, 3, H, W) in [0, 1].
        scales, flips: one view per pair: resized by ``scale`` (bilinear), mirrored left-right when ``flip``.

    Returns:
        (B, N, 5 + C) as :func:`~yolo_attn.models.decode.decode_outputs` gives for one view, the views'
        rows concatenated: feed it to :func:`~yolo_attn.models.decode.postprocess`.
    """
    height, width = batch.shape[-2:]
    pooled = []
    for scale, flip in check_views(scales, flips):
        h, w = view_shape((height, width), scale, strides[0])
        view = batch if (h, w) == (height, width) else F.interpolate(
            batch, size=(h, w), mode="bilinear", align_corners=False)
        if flip:
            view = view.flip(-1)
        decoded = decode_outputs(run(view), level_anchors, strides, scale_x_y)
        boxes = decoded[..., :4]
        if flip:
            boxes = torch.stack([w - boxes[..., 2], boxes[..., 1], w - boxes[..., 0], boxes[..., 3]], dim=-1)
        gain = boxes.new_tensor([width / w, height / h, width / w, height / h])
        pooled.append(torch.cat([boxes * gain, decoded[..., 4:]], dim=-1))
    return torch.cat(pooled, dim=1)
