"""The embedded default dataset: coloured shapes on cluttered backgrounds, generated on first use.

Nothing can be downloaded here, so the project makes its own detection data: ~2,000 train and 300 val
images of 320-416 px (width and height drawn separately, so aspect ratios vary), in VOC layout, from a
seed, in a cache folder (``~/.cache/yolo_attn``; ``YOLO_ATTN_CACHE`` overrides). Generation is
deterministic (each image has its own seed, so the process pool's scheduling does not matter) and a
folder that is complete (a ``COMPLETE`` file written last, holding the parameters) is reused.

What makes it a detection task rather than a toy:
- ten shape classes whose silhouettes stay distinct at any rotation (no square/diamond pair): circle,
  square, triangle, star, cross, ring, crescent, arrow, heart, lshape; mild aspect stretch, any rotation;
- colours and fills (solid, two-colour gradient, stripes) are not tied to class; each object's colour is
  chosen to stand out from the background under it (clean, not noise-dominated);
- sizes (longest box side) from 12 px to half the shorter image side: log-uniform from 18 px, plus 6 %
  between 12 and 18 px;
- objects overlap and occlude each other, but a placement that would leave any object less than
  60 % visible is rejected, so no object is hidden by half or more (none needs ``difficult``); boxes are
  tight around the *visible* pixels, as VOC annotators draw them;
- textured backgrounds (low-frequency colour fields, gradients, stripes, grain) with distractor marks
  that are not objects (lines, scribbles, dots, letters, open arcs, thin ellipses), a few thin lines
  across objects, mild blur and JPEG artefacts; about 5 % of the images have no objects.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

import cv2
import numpy as np

__all__ = [
    "SHAPE_CLASSES",
    "SHAPES_CONFIG",
    "cache_dir",
    "ensure_shapes_dataset",
    "generate_shapes",
    "render_image",
]

LOGGER = logging.getLogger("yolo_attn.data")

SHAPE_CLASSES = ("circle", "square", "triangle", "star", "cross", "ring", "crescent", "arrow", "heart", "lshape")
VERSION = 2  # bump when the generator's output changes, so stale caches are not reused
FOLDER = "SHAPES"  # the VOC "year" folder inside the dataset root

# The data config of the embedded dataset; configs/shapes.yaml mirrors it.
SHAPES_CONFIG: Dict[str, object] = {
    "format": "voc",
    "embedded": "shapes",
    "seed": 0,
    "num_train": 2000,
    "num_val": 300,
    "root": None,  # filled in by load_data_config: the cache folder the dataset was generated into
    "train": [f"{FOLDER}/train"],
    "val": [f"{FOLDER}/val"],
    "names": list(SHAPE_CLASSES),
}

MIN_SIZE, SMALL_SIZE = 12, 18  # longest box side: hard floor, and the top of the rare "small" range
MIN_VISIBLE = 0.6              # fraction of an object's pixels that must stay visible
SUB = 16                       # cv2 fixed-point shift 4: polygons are drawn with 1/16 px precision
LETTERS = "abdefghkmnpqrsuvwyz2345679"  # no o/x/t/l/i/c: they look like ring, cross, arrow, lshape, ...


def cache_dir() -> Path:
    """Where generated data lives: ``$YOLO_ATTN_CACHE`` or ``~/.cache/yolo_attn``."""
    return Path(os.environ.get("YOLO_ATTN_CACHE") or Path.home() / ".cache" / "yolo_attn").expanduser()


# ----------------------------------------------------------------------------------------------- shapes
def _circle(n: int = 48) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.stack([np.cos(t), np.sin(t)], 1)


def _star(inner: float) -> np.ndarray:
    t = np.arange(10) * np.pi / 5 - np.pi / 2
    r = np.where(np.arange(10) % 2 == 0, 1.0, inner)
    return np.stack([r * np.cos(t), r * np.sin(t)], 1)


def _cross(arm: float) -> np.ndarray:
    a = arm
    return np.array([(-a, -1), (a, -1), (a, -a), (1, -a), (1, a), (a, a), (a, 1), (-a, 1), (-a, a), (-1, a),
                     (-1, -a), (-a, -a)], float)


def _arrow(shaft: float, head: float) -> np.ndarray:
    return np.array([(-1, -shaft), (0.15, -shaft), (0.15, -head), (1, 0), (0.15, head), (0.15, shaft),
                     (-1, shaft)], float)


def _heart() -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, 60, endpoint=False)
    x = 16 * np.sin(t) ** 3
    y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
    return np.stack([x, y], 1) / 17.0


def _lshape(bar: float) -> np.ndarray:
    return np.array([(-1, -1), (-1 + bar, -1), (-1 + bar, 1 - bar), (1, 1 - bar), (1, 1), (-1, 1)], float)


def _shape_contours(name: str, rng: np.random.Generator) -> Tuple[List[np.ndarray], List[np.ndarray]]:
    """Unit-size (filled, holes) contours of one shape; holes are cut out of the filled part."""
    if name == "circle":
        return [_circle()], []
    if name == "square":
        return [np.array([(-1, -1), (1, -1), (1, 1), (-1, 1)], float)], []
    if name == "triangle":
        t = np.array([-90, 30, 150]) * np.pi / 180
        return [np.stack([np.cos(t), np.sin(t)], 1)], []
    if name == "star":
        return [_star(rng.uniform(0.38, 0.5))], []
    if name == "cross":
        return [_cross(rng.uniform(0.3, 0.4))], []
    if name == "ring":
        return [_circle()], [_circle() * rng.uniform(0.45, 0.62)]
    if name == "crescent":
        shift = rng.uniform(0.35, 0.55)
        return [_circle()], [_circle() * rng.uniform(0.8, 0.92) + (shift, -0.1)]
    if name == "arrow":
        return [_arrow(rng.uniform(0.2, 0.28), rng.uniform(0.55, 0.7))], []
    if name == "heart":
        return [_heart()], []
    if name == "lshape":
        return [_lshape(rng.uniform(0.5, 0.7))], []
    raise ValueError(f"unknown shape {name!r}")


def _place(contours: List[np.ndarray], holes: List[np.ndarray], size: float, angle: float, stretch: float,
           ) -> Tuple[List[np.ndarray], List[np.ndarray]]:
    """Rotate and stretch unit contours, then scale them so the longest side of their box is ``size``."""
    c, s = np.cos(angle), np.sin(angle)
    m = np.array([[c, -s], [s, c]]) @ np.diag([stretch, 1.0 / stretch])
    contours = [p @ m.T for p in contours]
    holes = [p @ m.T for p in holes]
    pts = np.concatenate(contours)
    extent = (pts.max(0) - pts.min(0)).max()
    centre = (pts.max(0) + pts.min(0)) / 2
    k = size / extent
    return [(p - centre) * k for p in contours], [(p - centre) * k for p in holes]


def _alpha_mask(contours: List[np.ndarray], holes: List[np.ndarray], shape: Tuple[int, int],
                offset: np.ndarray) -> np.ndarray:
    """Anti-aliased (h, w) uint8 coverage of contours minus holes, drawn at ``offset`` within the ROI."""
    mask = np.zeros(shape, np.uint8)
    cv2.fillPoly(mask, [np.round((p + offset) * SUB).astype(np.int32) for p in contours], 255, cv2.LINE_AA, 4)
    if holes:
        hole = np.zeros(shape, np.uint8)
        cv2.fillPoly(hole, [np.round((p + offset) * SUB).astype(np.int32) for p in holes], 255, cv2.LINE_AA, 4)
        mask = cv2.subtract(mask, hole)
    return mask


# ----------------------------------------------------------------------------------------------- colours
def _random_colour(rng: np.random.Generator) -> np.ndarray:
    hsv = np.array([[[rng.integers(0, 180), rng.integers(40, 256), rng.integers(40, 256)]]], np.uint8)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32)


def _luma(rgb: np.ndarray) -> float:
    return float(rgb @ np.array([0.299, 0.587, 0.114], np.float32))


def _contrasting_colour(rng: np.random.Generator, under: np.ndarray) -> np.ndarray:
    """A random colour that stands out from ``under`` (the mean background colour below the object)."""
    best, best_score = None, -1.0
    for _ in range(24):
        colour = _random_colour(rng)
        score = min(abs(_luma(colour) - _luma(under)) / 55.0, float(np.abs(colour - under).sum()) / 150.0)
        if score >= 1.0:
            return colour
        if score > best_score:
            best, best_score = colour, score
    return best


# ----------------------------------------------------------------------------------------------- background
def _background(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """A textured, moderately contrasted background (uint8 RGB).

    Colour fields are made on a tiny grid, softened there (scaling about the mean commutes with
    interpolation) and interpolated up; stripes and grain are one channel added to all three."""
    gradient = rng.random() >= 0.5
    if not gradient:  # low-frequency colour field
        grid = rng.uniform(0, 255, (rng.integers(2, 6), rng.integers(2, 6), 3)).astype(np.float32)
    else:  # two-colour linear gradient along a random direction
        c1, c2 = _random_colour(rng), _random_colour(rng)
        t = rng.uniform(0, 2 * np.pi)
        corners = np.array([[0, 0], [1, 0], [0, 1], [1, 1]], np.float32) - 0.5
        ramp = corners @ np.array([np.cos(t), np.sin(t)], np.float32)
        ramp = (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1e-6)
        grid = (c1 + ramp[:, None] * (c2 - c1)).reshape(2, 2, 3).astype(np.float32)
    mean = grid.mean((0, 1), keepdims=True)
    grid = mean + (grid - mean) * rng.uniform(0.3, 0.8)  # soften: objects, not the background, stand out
    # cv2.resize samples pixel centres, which would flatten a 2x2 gradient near its ends
    bg = _bilinear(grid, h, w) if gradient else cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)
    cell = int(rng.integers(2, 7))  # grain: coarse random texture, 2-6 px
    grain = rng.standard_normal(((h + cell - 1) // cell, (w + cell - 1) // cell), dtype=np.float32)
    texture = cv2.resize(grain, (w, h), interpolation=cv2.INTER_LINEAR) * np.float32(rng.uniform(3, 10))
    if rng.random() < 0.4:  # stripes or a checker-like interference pattern
        f1, f2 = rng.uniform(0.03, 0.25, 2)
        t = rng.uniform(0, np.pi)
        x = np.arange(w, dtype=np.float32)[None, :]
        y = np.arange(h, dtype=np.float32)[:, None]
        wave = np.sin(f1 * (np.cos(t) * x + np.sin(t) * y))
        if rng.random() < 0.5:
            wave = wave * np.sin(f2 * (-np.sin(t) * x + np.cos(t) * y))
        texture += np.float32(rng.uniform(8, 22)) * wave
    bg += texture[:, :, None]
    return np.clip(bg, 0, 255, out=bg).astype(np.uint8)


def _bilinear(grid: np.ndarray, h: int, w: int) -> np.ndarray:
    """Bilinear interpolation of a 2x2 grid from corner to corner of an (h, w) image."""
    u = np.linspace(0, 1, w, dtype=np.float32)[None, :, None]
    v = np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
    top = grid[0, 0] + u * (grid[0, 1] - grid[0, 0])
    bottom = grid[1, 0] + u * (grid[1, 1] - grid[1, 0])
    return top + v * (bottom - top)


def _distractors(img: np.ndarray, rng: np.random.Generator, count: int, thin_only: bool = False) -> None:
    """Marks that are not objects: lines, scribbles, dots, letters, open arcs, thin ellipses (in place)."""
    h, w = img.shape[:2]
    for _ in range(count):
        colour = tuple(float(v) for v in _random_colour(rng))
        kind = 0 if thin_only else rng.integers(0, 6)
        p = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        if kind == 0:
            q = (int(rng.integers(0, w)), int(rng.integers(0, h)))
            cv2.line(img, p, q, colour, int(rng.integers(1, 3)), cv2.LINE_AA)
        elif kind == 1:
            steps = rng.integers(-30, 31, (int(rng.integers(3, 8)), 2))
            pts = (np.array(p) + np.cumsum(steps, 0)).astype(np.int32)
            cv2.polylines(img, [pts], False, colour, int(rng.integers(1, 3)), cv2.LINE_AA)
        elif kind == 2:
            for _ in range(int(rng.integers(1, 6))):
                q = (p[0] + int(rng.integers(-25, 26)), p[1] + int(rng.integers(-25, 26)))
                cv2.circle(img, q, int(rng.integers(1, 4)), colour, -1, cv2.LINE_AA)
        elif kind == 3:
            text = "".join(rng.choice(list(LETTERS), int(rng.integers(1, 5))))
            cv2.putText(img, text, p, cv2.FONT_HERSHEY_SIMPLEX, rng.uniform(0.35, 0.9), colour,
                        int(rng.integers(1, 3)), cv2.LINE_AA)
        elif kind == 4:
            axes = (int(rng.integers(8, 50)), int(rng.integers(8, 50)))
            start = rng.uniform(0, 360)
            cv2.ellipse(img, p, axes, rng.uniform(0, 180), start, start + rng.uniform(40, 220), colour,
                        int(rng.integers(1, 3)), cv2.LINE_AA)
        else:  # a thin filled ellipse: round-ish blobs would look like circles, so keep it elongated
            a = int(rng.integers(6, 26))
            cv2.ellipse(img, p, (a, max(1, int(a * rng.uniform(0.12, 0.35)))), rng.uniform(0, 180), 0, 360,
                        colour, -1, cv2.LINE_AA)


# ----------------------------------------------------------------------------------------------- one image
def _fill(h: int, w: int, colour: np.ndarray, rng: np.random.Generator, size: float) -> np.ndarray:
    """Object fill (h, w, 3) float32: solid, a two-colour gradient or (for larger objects) stripes."""
    style = rng.random()
    if style < 0.6:
        return np.broadcast_to(colour, (h, w, 3))
    other = np.clip(colour * rng.uniform(0.55, 0.8) + rng.uniform(-30, 30, 3), 0, 255).astype(np.float32)
    t = rng.uniform(0, 2 * np.pi)
    x, y = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    proj = np.cos(t) * x + np.sin(t) * y
    if style < 0.85 or size < 40:
        ramp = (proj - proj.min()) / max(float(np.ptp(proj)), 1e-6)
    else:
        ramp = (np.sin(proj * 2 * np.pi / rng.uniform(5, 12)) > 0).astype(np.float32)
    return colour + ramp[:, :, None] * (other - colour)


def _object_count(rng: np.random.Generator) -> int:
    if rng.random() < 0.05:
        return 0
    weights = np.exp(-np.arange(1, 13) / 3.5)
    return int(rng.choice(np.arange(1, 13), p=weights / weights.sum()))


def _object_size(rng: np.random.Generator, h: int, w: int) -> float:
    largest = 0.5 * min(h, w)
    if rng.random() < 0.06:  # a few small ones: below ~18 px even a heart is little more than a blob
        return float(rng.uniform(MIN_SIZE, SMALL_SIZE))
    return float(np.exp(rng.uniform(np.log(SMALL_SIZE), np.log(largest))))


def render_image(rng: np.random.Generator) -> Tuple[np.ndarray, List[Tuple[int, Tuple[int, int, int, int]]]]:
    """One image (H, W, 3) uint8 RGB and its objects as ``(class index, (c0, r0, c1, r1))``: inclusive
    pixel extents of the visible part of each object."""
    h, w = int(rng.integers(320, 417)), int(rng.integers(320, 417))
    canvas = _background(h, w, rng)  # uint8: putText draws on 8-bit images only
    _distractors(canvas, rng, int(rng.integers(3, 16)))
    owner = np.full((h, w), -1, np.int16)
    classes: List[int] = []
    totals: List[int] = []   # pixels of each object
    visible: List[int] = []  # of which still on top
    rois: List[Tuple[int, int, int, int]] = []
    for _ in range(_object_count(rng)):
        cls = int(rng.integers(0, len(SHAPE_CLASSES)))
        size = _object_size(rng, h, w)
        stretch = 1.0 if SHAPE_CLASSES[cls] in ("circle", "ring") else float(np.exp(rng.uniform(-0.2, 0.2)))
        contours, holes = _place(*_shape_contours(SHAPE_CLASSES[cls], rng), size, rng.uniform(0, 2 * np.pi), stretch)
        pts = np.concatenate(contours)
        lo, hi = pts.min(0), pts.max(0)
        for _attempt in range(20):
            centre = rng.uniform(-lo + 1, np.array([w, h]) - hi - 1)
            x0, y0 = np.floor(centre + lo).astype(int) - 1
            x1, y1 = np.ceil(centre + hi).astype(int) + 2
            x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
            alpha = _alpha_mask(contours, holes, (y1 - y0, x1 - x0), centre - (x0, y0))
            solid = alpha >= 128
            region = owner[y0:y1, x0:x1]
            hidden = np.bincount(region[solid & (region >= 0)], minlength=len(classes))
            if np.any(np.array(visible) - hidden < MIN_VISIBLE * np.array(totals)):
                continue
            region[solid] = len(classes)
            visible = [v - int(d) for v, d in zip(visible, hidden)]
            patch = canvas[y0:y1, x0:x1].astype(np.float32)
            under = patch[solid].mean(0) if solid.any() else patch.reshape(-1, 3).mean(0)
            fill = _fill(y1 - y0, x1 - x0, _contrasting_colour(rng, under), rng, size)
            a = alpha.astype(np.float32)[:, :, None] / 255.0
            canvas[y0:y1, x0:x1] = np.clip(patch * (1 - a) + fill * a + 0.5, 0, 255).astype(np.uint8)
            classes.append(cls)
            rois.append((x0, y0, x1, y1))
            totals.append(int(solid.sum()))
            visible.append(totals[-1])
            break
    if rng.random() < 0.25:
        _distractors(canvas, rng, int(rng.integers(1, 3)), thin_only=True)
    image = canvas
    if rng.random() < 0.25:
        image = cv2.GaussianBlur(image, (3, 3), rng.uniform(0.5, 0.9))
    objects = []
    for k, (cls, (x0, y0, x1, y1)) in enumerate(zip(classes, rois)):
        rows, cols = np.nonzero(owner[y0:y1, x0:x1] == k)
        if len(rows):
            objects.append((cls, (x0 + int(cols.min()), y0 + int(rows.min()), x0 + int(cols.max()),
                                  y0 + int(rows.max()))))
    return image, objects


def _voc_xml(image_id: str, h: int, w: int, objects) -> str:
    items = "".join(
        f"  <object>\n    <name>{SHAPE_CLASSES[c]}</name>\n    <pose>Unspecified</pose>\n"
        f"    <truncated>0</truncated>\n    <difficult>0</difficult>\n    <bndbox>\n"
        # VOC is 1-based inclusive: pixel columns c0..c1 are xmin = c0 + 1, xmax = c1 + 1.
        f"      <xmin>{c0 + 1}</xmin>\n      <ymin>{r0 + 1}</ymin>\n      <xmax>{c1 + 1}</xmax>\n"
        f"      <ymax>{r1 + 1}</ymax>\n    </bndbox>\n  </object>\n"
        for c, (c0, r0, c1, r1) in objects)
    return (f"<annotation>\n  <folder>{FOLDER}</folder>\n  <filename>{image_id}.jpg</filename>\n"
            f"  <size>\n    <width>{w}</width>\n    <height>{h}</height>\n    <depth>3</depth>\n  </size>\n"
            f"  <segmented>0</segmented>\n{items}</annotation>\n")


_SPLIT_CODES = {"train": 1, "val": 2}


def _generate_range(args) -> List[str]:
    """Worker task: render and write images ``start..stop`` of one split; returns their ids."""
    out, split, start, stop, seed = args
    out = Path(out)
    ids = []
    for i in range(start, stop):
        rng = np.random.default_rng([seed, _SPLIT_CODES[split], i])
        image, objects = render_image(rng)
        image_id = f"{split}_{i:06d}"
        quality = int(rng.integers(80, 96))
        ok, data = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
        if not ok:
            raise RuntimeError(f"could not encode {image_id}.jpg")
        (out / "JPEGImages" / f"{image_id}.jpg").write_bytes(data.tobytes())
        (out / "Annotations" / f"{image_id}.xml").write_text(_voc_xml(image_id, *image.shape[:2], objects))
        ids.append(image_id)
    return ids


def generate_shapes(root: Union[str, os.PathLike], seed: int = 0, num_train: int = 2000, num_val: int = 300,
                    workers: Optional[int] = None, chunk: int = 25) -> Path:
    """Generate the dataset into ``root`` (VOC layout under ``root/SHAPES``); returns ``root``.

    ``workers`` processes (default: all cores) render chunks of images; the output does not depend on it."""
    folder = Path(root) / FOLDER
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    tasks = [(str(folder), split, s, min(s + chunk, n), seed)
             for split, n in (("train", num_train), ("val", num_val)) for s in range(0, n, chunk)]
    workers = workers or os.cpu_count() or 1
    if workers > 1 and len(tasks) > 1:
        # fork where there is one: workers start in milliseconds and need nothing re-imported
        method = "fork" if "fork" in __import__("multiprocessing").get_all_start_methods() else None
        with ProcessPoolExecutor(workers, mp_context=get_context(method)) as pool:
            results = list(pool.map(_generate_range, tasks))
    else:
        results = [_generate_range(t) for t in tasks]
    ids = {"train": [], "val": []}
    for task, result in zip(tasks, results):
        ids[task[1]].extend(result)
    for split, split_ids in ids.items():
        (folder / "ImageSets" / "Main" / f"{split}.txt").write_text("".join(f"{i}\n" for i in split_ids))
    return Path(root)


def _params(seed: int, num_train: int, num_val: int) -> Dict[str, object]:
    return {"generator": "yolo_attn.data.shapes", "version": VERSION, "seed": seed, "num_train": num_train,
            "num_val": num_val, "names": list(SHAPE_CLASSES)}


def ensure_shapes_dataset(seed: int = 0, num_train: int = 2000, num_val: int = 300,
                          cache: Optional[Union[str, os.PathLike]] = None, workers: Optional[int] = None) -> Path:
    """The dataset root for these parameters, generating it first unless a complete copy exists.

    Generation writes into a temporary folder and renames it into place, so an interrupted run never
    leaves a half dataset that looks complete, and two processes generating at once both end up right."""
    params = _params(seed, num_train, num_val)
    root = Path(cache or cache_dir()) / f"shapes_v{VERSION}_seed{seed}_{num_train}_{num_val}"
    marker = root / "COMPLETE"
    if marker.is_file():
        try:
            if json.loads(marker.read_text()) == params:
                return root
        except (OSError, json.JSONDecodeError):
            pass
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = root.with_name(f"{root.name}.partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    LOGGER.warning("generating the embedded shapes dataset (%d train + %d val images, seed %d) into %s",
                   num_train, num_val, seed, root)
    start = time.perf_counter()
    generate_shapes(tmp, seed, num_train, num_val, workers)
    (tmp / "COMPLETE").write_text(json.dumps(params))
    if marker.is_file() and json.loads(marker.read_text()) == params:  # another process finished first
        shutil.rmtree(tmp, ignore_errors=True)
        return root
    shutil.rmtree(root, ignore_errors=True)  # an incomplete or stale copy
    try:
        os.rename(tmp, root)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not marker.is_file():
            raise
    LOGGER.warning("generated %s in %.1f s", root, time.perf_counter() - start)
    return root
