"""The embedded shapes dataset: deterministic for a seed, VOC layout that reads back cleanly, cached."""
import hashlib
import json

import numpy as np

from yolo_attn.data import SHAPE_CLASSES, build_dataset, ensure_shapes_dataset, generate_shapes, load_data_config
from yolo_attn.data import shapes


def digest(root):
    files = sorted(p for p in root.rglob("*") if p.is_file())
    return {str(p.relative_to(root)): hashlib.sha1(p.read_bytes()).hexdigest() for p in files}


def test_generation_is_deterministic_for_a_seed(tmp_path):
    a = digest(generate_shapes(tmp_path / "a", seed=7, num_train=4, num_val=2, workers=1, chunk=2))
    b = digest(generate_shapes(tmp_path / "b", seed=7, num_train=4, num_val=2, workers=2, chunk=2))
    assert a == b  # neither run-to-run nor process-pool scheduling changes a byte
    assert sum(k.endswith(".jpg") for k in a) == 6 and sum(k.endswith(".xml") for k in a) == 6
    c = digest(generate_shapes(tmp_path / "c", seed=8, num_train=4, num_val=2, workers=1))
    assert c != a


def test_render_respects_sizes_and_visibility():
    for i in range(12):
        image, objects = shapes.render_image(np.random.default_rng([3, i]))
        h, w = image.shape[:2]
        assert 320 <= h <= 416 and 320 <= w <= 416 and image.dtype == np.uint8
        for cls, (c0, r0, c1, r1) in objects:
            assert 0 <= cls < len(SHAPE_CLASSES)
            assert 0 <= c0 <= c1 < w and 0 <= r0 <= r1 < h
            assert max(c1 - c0, r1 - r0) + 1 >= 8  # 12 px drawn; occlusion may trim a little
            assert max(c1 - c0, r1 - r0) + 1 <= min(h, w) / 2 + 2


def test_config_generates_once_then_reuses(tmp_path, monkeypatch):
    monkeypatch.setenv("YOLO_ATTN_CACHE", str(tmp_path / "cache"))
    cfg = load_data_config(None, {"num_train": 3, "num_val": 2})
    assert cfg["format"] == "voc" and cfg["names"] == list(SHAPE_CLASSES)
    assert cfg["root"].startswith(str(tmp_path / "cache"))
    train, val = build_dataset(cfg, "train"), build_dataset(cfg, "val")
    assert (len(train), len(val)) == (3, 2) and len(train.problems) == 0 and len(val.problems) == 0
    rec = train.load_record(0)
    assert rec.image.shape == (rec.height, rec.width, 3)
    assert rec.boxes.min(initial=0) >= 0 and np.all(rec.boxes[:, 2] <= rec.width)
    marker = tmp_path / "cache" / cfg["root"].rsplit("/", 1)[-1] / "COMPLETE"
    assert json.loads(marker.read_text())["seed"] == 0

    def fail(*args, **kwargs):
        raise AssertionError("regenerated a complete dataset")

    monkeypatch.setattr(shapes, "generate_shapes", fail)
    assert str(ensure_shapes_dataset(0, 3, 2)) == cfg["root"]
