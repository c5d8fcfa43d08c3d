"""Small random-weight checkpoints and media for the inference tests (written into tmp_path)."""
from __future__ import annotations

from pathlib import Path
from typing import List

import cv2
import numpy as np
import torch

from yolo_attn.models import build_model
from yolo_attn.utils.checkpoint import make_meta, save_checkpoint

NAMES = ["cat", "dog", "bird"]
IMG_SIZE = 128


@torch.no_grad()
def make_checkpoint(path: Path, phi: int = 2, objectness_bias: float = -2.0, seed: int = 0, **meta_extra) -> Path:
    """A random-weight checkpoint that still gives varied boxes with spread-out scores: BatchNorm statistics
    are measured on random images (so activations keep unit scale through the network); the objectness
    bias shifts how many boxes pass a threshold."""
    torch.manual_seed(seed)
    model = build_model(phi, len(NAMES))
    model.train()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None  # cumulative average over the calibration batch
    model(torch.rand(4, 3, 64, 64))
    for head in (model.head_p5.pred, model.head_p4.pred):
        head.bias.view(model.num_anchors, -1)[:, 4] += objectness_bias
    model.eval()
    meta = make_meta(model, NAMES, img_size=IMG_SIZE)
    meta.update(meta_extra)
    save_checkpoint({"meta": meta, "model": model.state_dict(), "ema": None}, path)
    return path


def write_images(folder: Path, count: int = 3, seed: int = 0) -> List[Path]:
    """Noise images with coloured rectangles, of several sizes and aspect ratios."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        h, w = [(120, 160), (160, 96), (100, 100)][i % 3]
        image = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
        cv2.rectangle(image, (10, 10), (w // 2, h // 2), (0, 200, 255), -1)
        path = folder / f"img{i}.png"
        cv2.imwrite(str(path), image)
        paths.append(path)
    return paths


def write_video(path: Path, frames: int = 6, size=(160, 120), fps: float = 12.0, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    for i in range(frames):
        image = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
        cv2.putText(image, str(i), (20, 60), cv2.FONT_HERSHEY_SIMPLEX, 1.5, (255, 255, 255), 3)
        writer.write(image)
    writer.release()
    return path


def count_frames(path: Path) -> int:
    """Frames actually decodable (not the container's claim)."""
    capture = cv2.VideoCapture(str(path))
    n = 0
    while capture.read()[0]:
        n += 1
    capture.release()
    return n


def write_own_labels(detector, images: List[Path], label_dir: Path) -> None:
    """YOLO-txt labels for ``images``: up to three of ``detector``'s own boxes and one it misses (class 2 at the
    centre), so its mAP on them lies strictly between 0 and 1."""
    label_dir.mkdir(parents=True, exist_ok=True)
    for path in images:
        found = detector(path)
        h, w = found.image_shape
        lines = [f"{c} {(b[0] + b[2]) / 2 / w} {(b[1] + b[3]) / 2 / h} {(b[2] - b[0]) / w} {(b[3] - b[1]) / h}"
                 for b, c in zip(found.boxes[:3], found.labels[:3])]
        (label_dir / f"{path.stem}.txt").write_text("\n".join(lines + ["2 0.5 0.5 0.1 0.1"]))


def run_predict_tool(weights, source, project, *args, **kw) -> int:
    """run_predict as tools/predict.py calls it, from its own argument parser (``weights`` None: no --weights)."""
    import sys

    from yolo_attn.inference.predict import run_predict

    tools = str(Path(__file__).resolve().parents[2] / "tools")
    sys.path.insert(0, tools)
    try:
        import predict as tool
    finally:
        sys.path.remove(tools)
    argv = (["--weights", str(weights)] if weights else []) + ["--source", str(source), "--project", str(project),
                                                               *args]
    return run_predict(**vars(tool.build_parser().parse_args(argv)), **kw)


class FakeCapture:
    """Stands in for cv2.VideoCapture(0): a few frames, then the camera 'ends'; fps unknown (0) as many
    webcams report; optionally a Ctrl-C at frame ``interrupt_at``."""

    def __init__(self, frames=5, size=(96, 64), opened=True, interrupt_at=None):
        self.frames, self.size, self.opened, self.interrupt_at = frames, size, opened, interrupt_at
        self.read_count, self.released = 0, False
        self.rng = np.random.default_rng(1)

    def __call__(self, spec):  # the capture factory
        self.spec = spec
        return self

    def isOpened(self):
        return self.opened

    def read(self):
        if self.interrupt_at is not None and self.read_count == self.interrupt_at:
            raise KeyboardInterrupt
        if self.read_count >= self.frames:
            return False, None
        self.read_count += 1
        return True, self.rng.integers(0, 255, (self.size[1], self.size[0], 3), dtype=np.uint8)

    def get(self, prop):
        return 0.0

    def release(self):
        self.released = True
