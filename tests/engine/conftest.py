"""A tiny YOLO-txt dataset of two easy classes (filled boxes and discs), for training tests."""
from pathlib import Path

import cv2
import numpy as np
import pytest


def write_tiny_dataset(root: Path, n_train: int = 8, n_val: int = 4, size=(128, 160), seed: int = 0) -> Path:
    """Images with 1-2 large objects each, side by side (never hidden behind each other, so that every box can
    be learned); returns the data config path."""
    rng = np.random.default_rng(seed)
    h, w = size
    for split, n in (("train", n_train), ("val", n_val)):
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "labels" / split).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            img = np.full((h, w, 3), 90, np.uint8)
            lines = []
            count = 1 + i % 2
            for slot in range(count):
                cls = (i + slot) % 2  # both classes equally often
                bw, bh = (int(v) for v in rng.integers(30, 60, 2))
                left, right = slot * w // count, (slot + 1) * w // count
                x, y = int(rng.integers(left, right - bw)), int(rng.integers(0, h - bh))
                if cls == 0:
                    cv2.rectangle(img, (x, y), (x + bw - 1, y + bh - 1), (255, 40, 40), -1)
                else:
                    cv2.ellipse(img, (x + bw // 2, y + bh // 2), (bw // 2, bh // 2), 0, 0, 360, (40, 255, 40), -1)
                lines.append(f"{cls} {(x + bw / 2) / w:.6f} {(y + bh / 2) / h:.6f} {bw / w:.6f} {bh / h:.6f}")
            cv2.imwrite(str(root / "images" / split / f"{i}.jpg"), img)
            (root / "labels" / split / f"{i}.txt").write_text("\n".join(lines) + "\n")
    cfg = root / "data.yaml"
    cfg.write_text(f"format: yolo\nroot: {root}\ntrain: [images/train]\nval: [images/val]\nnames: [box, disc]\n")
    return cfg


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    return write_tiny_dataset(tmp_path_factory.mktemp("tiny"))
