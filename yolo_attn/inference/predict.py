"""Prediction over sources (images, folders, globs, videos, webcams, streams) with annotated outputs.

:func:`predict` does the work with a ready :class:`Detector`; :func:`run_predict` is the command line's
entry (``tools/predict.py``): it loads the detector, turns every expected failure into one line on stderr
and returns the exit status.
"""
from __future__ import annotations

import copy
import json
import os
import re
import sys
import time
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np

from .detector import Detections, Detector
from .draw import draw_detections, draw_fps, overlay_heatmap
from .sources import ImageFiles, SourceError, VideoSink, VideoStream, Viewer, open_sources
from .views import attention_maps, format_channel_weights, mean_attention_map, objectness_map

__all__ = ["PredictSummary", "predict", "run_predict"]

Log = Callable[[str], None]


@dataclass
class PredictSummary:
    """What a prediction run did."""

    save_dir: Optional[Path]
    images: int = 0
    frames: int = 0
    boxes: int = 0
    skipped: List[str] = field(default_factory=list)
    stopped_early: List[str] = field(default_factory=list)  # videos that failed mid-way, their frames so far kept
    outputs: List[Path] = field(default_factory=list)  # annotated images and videos written
    interrupted: bool = False  # Ctrl-C
    stopped: bool = False  # 'q' in the viewer

    @property
    def processed(self) -> int:
        return self.images + self.frames


def _describe(det: Detections) -> str:
    if not len(det):
        return "no detections"
    names, counts = np.unique(np.asarray(det.names), return_counts=True)
    return ", ".join(f"{c} {n}" for n, c in zip(names, counts))


def _txt_lines(det: Detections, txt_format: str = "pixels", save_conf: bool = False) -> str:
    """One line per box. ``pixels``: class index, score, x1, y1, x2, y2 in pixels. ``yolo``: YOLO label format
    (Ultralytics' save_txt), class index, centre x, centre y, width, height as fractions of the image, then
    the score with ``save_conf``: files that train as labels (pseudo-labelling)."""
    if txt_format == "pixels":
        return "".join(
            f"{int(c)} {float(s):.6f} {b[0]:.2f} {b[1]:.2f} {b[2]:.2f} {b[3]:.2f}\n"
            for b, s, c in zip(det.boxes, det.scores, det.labels)
        )
    h, w = det.image_shape
    lines = []
    for b, s, c in zip(det.boxes, det.scores, det.labels):
        xc, yc, bw, bh = (b[0] + b[2]) / 2 / w, (b[1] + b[3]) / 2 / h, (b[2] - b[0]) / w, (b[3] - b[1]) / h
        lines.append(f"{int(c)} {xc:.6f} {yc:.6f} {bw:.6f} {bh:.6f}" + (f" {float(s):.6f}" if save_conf else "") + "\n")
    return "".join(lines)


def _json_records(det: Detections, image_id: Union[int, str], file_name: str, frame: Optional[int]) -> List[dict]:
    """COCO results style: bbox is [x, y, width, height] in pixels; category_id is our class index."""
    records = []
    for b, s, c, n in zip(det.boxes, det.scores, det.labels, det.names):
        record = {
            "image_id": image_id,
            "file_name": file_name,
            "category_id": int(c),
            "category_name": n,
            "bbox": [round(float(b[0]), 3), round(float(b[1]), 3),
                     round(float(b[2] - b[0]), 3), round(float(b[3] - b[1]), 3)],
            "score": round(float(s), 6),
        }
        if frame is not None:
            record["frame"] = frame
        records.append(record)
    return records


class _OutputNames:
    """Unique output stems within one run: ``a/img.png`` and ``b/img.png``, or ``x.png`` and ``x.jpg``, or
    ``clip.mp4`` and ``clip.avi`` would otherwise write the same annotated file, ``labels/<stem>.txt`` and JSON
    image id, the later silently replacing the earlier. A repeated stem gets the first free ``_2``, ``_3``, ...
    suffix; stems seen once keep their names. Compared case-insensitively (``X.png`` and ``x.jpg`` are one
    file on macOS and Windows)."""

    def __init__(self, log: Log):
        self.log = log
        self.images: set = set()
        self.videos: set = set()
        self.numbers: set = set()  # image ids given as numbers
        self.warned = False

    def image(self, stem: str, source: str) -> str:
        return self._claim(stem, source, video=False)

    def video(self, stem: str, source: str) -> str:
        return self._claim(stem, source, video=True)

    def image_id(self, stem: str) -> Union[int, str]:
        """The JSON image id of an image saved as ``stem``: the number of an all-digit name (COCO's
        000000397133.jpg is image 397133 to pycocotools), else the stem. Unique in the run: of 0001.png and
        1.png, the later keeps its stem."""
        if stem.isdigit() and int(stem) not in self.numbers:
            self.numbers.add(int(stem))
            return int(stem)
        return stem

    def _claim(self, stem: str, source: str, video: bool) -> str:
        name, n = stem, 1
        while self._taken(name.casefold(), video):
            n += 1
            name = f"{stem}_{n}"
        (self.videos if video else self.images).add(name.casefold())
        if name != stem and not self.warned:
            self.warned = True
            self.log(f"warning: {source} has the same name as an earlier source; its results are saved as "
                     f"'{name}' (and later repeats with the next free _N suffix) so that nothing is overwritten")
        return name

    def _taken(self, key: str, video: bool) -> bool:
        # an image and a video may share a stem (x.png and x.mp4 write different files), except where the
        # video's frame labels <stem>_<frame>.txt would land on an image's labels/<stem>.txt
        if video:
            return key in self.videos or any(re.fullmatch(rf"{re.escape(key)}_\d+", s) for s in self.images)
        return key in self.images or any(re.fullmatch(rf"{re.escape(v)}_\d+", key) for v in self.videos)


def _save_crops(folder: Path, image: np.ndarray, det: Detections, stem: str) -> int:
    """Each box cut from the unannotated ``image`` (BGR) as ``crops/<class name>/<stem>_<k>.jpg``, k its rank
    in the image's detections (as Ultralytics' ``save_crop``, with the box exact, not padded). Boxes are
    rounded outwards and clipped to the image; one with no pixel left is not written. Returns the count."""
    from ..utils.paths import write_atomic

    h, w = image.shape[:2]
    written = 0
    for k, (box, name) in enumerate(zip(det.boxes, det.names)):
        x1, y1 = max(int(np.floor(box[0])), 0), max(int(np.floor(box[1])), 0)
        x2, y2 = min(int(np.ceil(box[2])), w), min(int(np.ceil(box[3])), h)
        if x2 <= x1 or y2 <= y1:
            continue
        ok, encoded = cv2.imencode(".jpg", image[y1:y2, x1:x2])
        if ok:
            # a class name is a folder name: path separators in it would make other folders
            safe = re.sub(r'[\\/:*?"<>|\x00]', "_", name).strip(" .") or "_"
            write_atomic(folder / "crops" / safe / f"{stem}_{k}.jpg", encoded.tobytes())
            written += 1
    return written


class _Renderer:
    """Draws the chosen view: boxes, over the objectness heat map or the attention map when asked;
    ``style`` holds draw_detections' line_width, hide_labels and hide_conf."""

    def __init__(self, detector: Detector, heatmap: bool, attention: bool, log: Log,
                 style: Optional[Dict[str, Any]] = None):
        self.detector, self.heatmap, self.attention = detector, heatmap, attention
        self.style = style or {}
        self.spatial = True
        if attention:
            model = detector.backend.torch_model
            if model is None:
                raise ValueError(f"--attention needs the PyTorch model; the {detector.backend.name} backend has "
                                 f"none (use the .pt checkpoint with --backend torch)")
            kind = detector.meta["model"].get("attention")
            if not kind:
                raise ValueError("--attention: this model has no attention blocks (phi 0); --heatmap shows "
                                 "its objectness instead")
            if kind in ("se", "eca"):
                self.spatial = False
                log(f"{kind} weights channels only (no spatial gate): printing its top channel weights")

    def __call__(self, image: np.ndarray, det: Detections) -> np.ndarray:
        canvas = image
        if self.heatmap:
            canvas = overlay_heatmap(canvas, objectness_map(det, self.detector.num_anchors))
        if self.attention and self.spatial and attention_maps(det):
            canvas = overlay_heatmap(canvas, mean_attention_map(det))
        return draw_detections(canvas, det.boxes, det.scores, det.labels, det.names, **self.style)


def predict(
    detector: Detector,
    source: Union[str, int],
    save_dir: Optional[Union[str, Path]] = None,
    save: bool = True,
    save_txt: bool = False,
    save_json: bool = False,
    view: bool = False,
    heatmap: bool = False,
    attention: bool = False,
    capture_factory: Callable[..., Any] = cv2.VideoCapture,
    log: Log = print,
    save_crop: bool = False,
    vid_stride: int = 1,
    line_width: Optional[int] = None,
    hide_labels: bool = False,
    hide_conf: bool = False,
    txt_format: str = "pixels",
    save_conf: bool = False,
) -> PredictSummary:
    """Predict on every image or frame of ``source`` and write what was asked into ``save_dir``.

    Annotated images keep their file names; videos become ``<stem>.mp4`` at the source's size, every frame
    included (with ``vid_stride`` N every N-th frame, at 1/N of the source's fps, so the video keeps its
    length); ``--save-txt`` writes ``labels/<stem>.txt`` (``labels/<stem>_<frame>.txt`` for video, the frame's
    number in the source; ``txt_format`` "pixels" or "yolo", see :func:`_txt_lines`), ``--save-crop`` each box
    as ``crops/<class>/<stem>_<k>.jpg``, ``--save-json`` one ``predictions.json``. A stem that repeats within
    the run (``a/img.png`` and ``b/img.png``) is saved as ``img_2``, ... (with a warning). Ctrl-C stops cleanly:
    what was done is kept.
    """
    from ..utils.paths import write_atomic

    renderer = _Renderer(detector, heatmap, attention, log,
                         dict(line_width=line_width, hide_labels=hide_labels, hide_conf=hide_conf))
    sources = open_sources(source, capture_factory, warn=log, vid_stride=vid_stride)
    summary = PredictSummary(Path(save_dir) if save_dir is not None else None)
    if summary.save_dir is not None:
        summary.save_dir.mkdir(parents=True, exist_ok=True)
    records: List[Dict[str, Any]] = []
    viewer = Viewer(view, warn=log)
    options = dict(save=save and summary.save_dir is not None, save_txt=save_txt and summary.save_dir is not None,
                   save_crop=save_crop and summary.save_dir is not None, txt=(txt_format, save_conf),
                   keep_maps=heatmap, keep_gates=attention, names=_OutputNames(log), several=len(sources) > 1)
    try:
        for src in sources:
            try:
                if summary.stopped:
                    break
                if isinstance(src, ImageFiles):
                    _predict_images(detector, src, renderer, viewer, summary, records, options, log)
                elif _opened(src, summary, log):
                    _predict_video(detector, src, renderer, viewer, summary, records, options, log)
            finally:
                src.close()
                summary.skipped.extend(getattr(src, "skipped", []))
    except KeyboardInterrupt:
        summary.interrupted = True
        for src in sources:  # the ones not reached yet still hold captures
            src.close()
        log("interrupted: stopping; everything written so far is kept")
    finally:
        viewer.close()
        # not for a run that read nothing: its folder is taken back, not left holding an empty list
        if save_json and summary.save_dir is not None and (summary.processed or summary.interrupted):
            write_atomic(summary.save_dir / "predictions.json", json.dumps(records, indent=1))
    return summary


def _opened(src: VideoStream, summary: PredictSummary, log: Log) -> bool:
    """Open a folder's video when its turn comes; one that cannot be read is reported and skipped."""
    try:
        src.open()
    except SourceError as e:
        log(f"warning: skipping {e}")
        summary.skipped.append(str(src.spec))
        return False
    return True


def _predict_images(detector, src: ImageFiles, renderer, viewer, summary, records, options, log) -> None:
    from ..utils.paths import write_atomic

    for frame in src:
        start = time.perf_counter()
        det = detector.predict([frame.image], bgr=True, keep_maps=options["keep_maps"],
                               keep_gates=options["keep_gates"])[0]
        ms = (time.perf_counter() - start) * 1000
        summary.images += 1
        summary.boxes += len(det)
        source = Path(frame.name)
        stem = options["names"].image(source.stem, frame.path)
        renamed = f" (saved as {stem})" if stem != source.stem else ""
        log(f"{frame.path}: {_describe(det)} ({ms:.1f} ms){renamed}")
        if options["keep_gates"]:
            for line in format_channel_weights(det):
                log(f"  {line}")
        annotated = renderer(frame.image, det)
        file_name = f"{stem}{source.suffix}"
        if options["save"]:
            out = _save_image(summary.save_dir / file_name, annotated)
            summary.outputs.append(out)
        if options["save_txt"]:
            write_atomic(summary.save_dir / "labels" / f"{stem}.txt", _txt_lines(det, *options["txt"]))
        if options["save_crop"]:
            _save_crops(summary.save_dir, frame.image, det, stem)
        records.extend(_json_records(det, options["names"].image_id(stem), file_name, None))
        if not viewer.show(annotated):
            summary.stopped = True
            return


def _save_image(out: Path, image: np.ndarray) -> Path:
    """Write in the source's format; formats OpenCV reads but cannot write fall back to JPEG."""
    from ..utils.paths import write_atomic

    try:
        ok, encoded = cv2.imencode(out.suffix, image)
    except cv2.error:
        ok = False
    if not ok:
        out = out.with_suffix(".jpg")
        ok, encoded = cv2.imencode(".jpg", image)
    write_atomic(out, encoded.tobytes())
    return out


def _predict_video(detector, src: VideoStream, renderer, viewer, summary, records, options, log) -> None:
    """Decode, predict and encode in overlapping threads (see :mod:`yolo_attn.inference.video`)."""
    from tqdm import tqdm

    from ..utils.paths import write_atomic
    from .video import BackgroundWriter, pipelined, throughput_backend

    name = options["names"].video(src.name, str(src.spec))
    try:
        # every stride-th frame at 1/stride of the fps: the video keeps its length
        sink = VideoSink(summary.save_dir / f"{name}.mp4", src.fps / src.stride, src.size) if options["save"] else None
    except SourceError as e:  # of a folder's videos (a 1-pixel-wide one, say), this one only: the run goes on
        _leave_video(e, src, summary, options, log, f"skipping {src.spec}: {e}")
        return
    writer = BackgroundWriter(sink) if sink is not None else None
    where = f"{src.spec}" if src.kind == "video" else f"{src.kind} {src.spec}"
    renamed = f" (saved as {name})" if name != src.name and sink is None else ""
    every = f", every {src.stride} frames" if src.stride > 1 else ""
    log(f"{where}: {src.size[0]}x{src.size[1]} at {src.fps:.1f} fps{every}"
        + (f" -> {sink.path}" if sink else renamed))
    if sink is not None and sink.written_size != sink.size:
        lost = " and ".join(part for part, odd in (("column", src.size[0] % 2), ("row", src.size[1] % 2)) if odd)
        log(f"note: {sink.path} is written at {sink.written_size[0]}x{sink.written_size[1]}: the mp4v encoder "
            f"takes even sizes only, so each frame loses its last {lost}")
    # attention gates live on the modules: one frame at a time; otherwise two frames in flight
    workers = 1 if options["keep_gates"] or detector.backend.device != "cpu" else 2
    runner = copy.copy(detector)
    runner.backend = throughput_backend(detector.backend, workers)
    runner.rect = True  # every frame has one size: run the smallest canvas that holds it

    def process(frame):
        det = runner.predict([frame.image], bgr=True, keep_maps=options["keep_maps"],
                             keep_gates=options["keep_gates"])[0]
        return det, renderer(frame.image, det)

    fps, start, frames, last = 0.0, time.perf_counter(), 0, time.perf_counter()
    expected = -(-src.frame_count // src.stride) if src.frame_count else None  # frames 0, stride, 2 stride, ...
    progress = tqdm(total=expected, unit="frame", desc=src.name, disable=None, leave=False)
    try:
        with _skip_when_several(src, summary, options, log, lambda: frames), \
                closing(pipelined(src, process, workers)) as results:
            for frame, (det, annotated) in results:
                if options["keep_gates"] and frame.index == 0:
                    for line in format_channel_weights(det):
                        log(f"  (first frame) {line}")
                if writer is not None:
                    writer.write(annotated)
                if options["save_txt"]:
                    write_atomic(summary.save_dir / "labels" / f"{name}_{frame.index}.txt",
                                 _txt_lines(det, *options["txt"]))
                if options["save_crop"]:
                    _save_crops(summary.save_dir, frame.image, det, f"{name}_{frame.index}")
                # the frame's labels file stem: unique across the videos and images of a run
                records.extend(_json_records(det, f"{name}_{frame.index}", name, frame.index))
                frames += 1
                summary.frames += 1
                summary.boxes += len(det)
                now = time.perf_counter()
                dt, last = now - last, now
                # smoothed, for the live readout
                fps = 1.0 / dt if fps == 0.0 else 0.9 * fps + 0.1 / max(dt, 1e-9)
                progress.set_postfix_str(f"{fps:.1f} FPS, {len(det)} boxes", refresh=False)
                progress.update()
                if viewer.enabled and not viewer.show(draw_fps(annotated.copy(), fps)):
                    summary.stopped = True
                    break
            if not summary.stopped and src.kind != "video":
                # a webcam or stream has no end of its own: no frame means it ended, was unplugged or stalled
                log(f"warning: {where}: no frame after {frames} frames (the {src.kind} ended or stopped "
                    f"responding); the frames read are kept")
                summary.stopped_early.append(str(src.spec))
            # CAP_PROP_FRAME_COUNT is the container's estimate, sometimes a frame or two off: only a real shortfall
            elif not summary.stopped and expected and frames + max(2, expected // 100) < expected:
                read = f"{frames} of the {src.frame_count}" if src.stride == 1 else \
                    f"{frames} (one in {src.stride}) of the {src.frame_count}"
                log(f"warning: {src.spec}: ended after {read} frames its header gives "
                    f"(a truncated or damaged file?); the frames read are kept")
    finally:
        progress.close()
        if writer is not None:
            try:
                writer.close()  # always: a half-written mp4 without its index is unplayable
            finally:
                if sink.path.exists():  # none when no frame was written
                    summary.outputs.append(sink.path)
        elapsed = time.perf_counter() - start
        log(f"{where}: {frames} frames, {frames / max(elapsed, 1e-9):.1f} FPS end to end")


@contextmanager
def _skip_when_several(src: VideoStream, summary: PredictSummary, options: Dict[str, Any], log: Log,
                       frames: Callable[[], int]) -> Iterator[None]:
    """A video that fails mid-way (a read that raises) ends the run when it is the only source, and is reported
    and left (with the frames done so far written) when it is one of several."""
    try:
        yield
    except SourceError as e:
        _leave_video(e, src, summary, options, log, f"{e}; stopped {src.spec} after {frames()} frames, going on "
                     f"with the next", summary.stopped_early)


def _leave_video(error: SourceError, src: VideoStream, summary: PredictSummary, options: Dict[str, Any], log: Log,
                 warning: str, counted: Optional[List[str]] = None) -> None:
    """One of several sources that failed is reported (``warning``) and counted (as skipped, or in ``counted``);
    the only source re-raises ``error``, which ends the run."""
    if not options["several"]:
        raise error
    log(f"warning: {warning}")
    (summary.skipped if counted is None else counted).append(str(src.spec))


def _views(views: Sequence[Tuple[float, bool]]) -> str:
    return " ".join(f"{scale:g}{' flipped' if flip else ''}" for scale, flip in views)


# From this many images or frames on (webcams and streams: always), PyTorch weights without an export are
# converted to OpenVINO in memory where that pays (see hardware.auto_choice): about 2 s once, against about
# 8 ms saved a 720p frame with AMX (the README's Speed section).
LONG_RUN_IMAGES = 300


def _long_run(spec: Union[str, int], vid_stride: int) -> bool:
    """Whether ``spec`` brings LONG_RUN_IMAGES images or frames or more, from a listing that opens no capture
    (a video file's header is read for its frame count). What cannot be listed counts as nothing here:
    predict() says what is wrong with it, after the weights have loaded, as before."""
    try:
        sources = open_sources(spec, warn=lambda message: None, vid_stride=vid_stride, defer=True)
    except (OSError, SourceError, ValueError):  # OSError: a folder that cannot be read
        return False
    total = 0
    for src in sources:
        count = len(src) if isinstance(src, ImageFiles) else src.expected_frames()
        if count is None:  # a webcam or a stream (no end), or a video file whose header has no count
            return True
        total += count
    return total >= LONG_RUN_IMAGES


def run_predict(
    weights: Optional[str],
    source: Optional[str],
    conf: float = 0.25,
    iou: float = 0.45,
    img_size: Optional[int] = None,
    classes: Optional[Sequence[str]] = None,
    classes_file: Optional[str] = None,
    num_classes: Optional[int] = None,
    cfg: Optional[str] = None,
    max_det: int = 300,
    device: str = "auto",
    backend: Optional[str] = None,
    precision: Optional[str] = None,
    save_txt: bool = False,
    save_json: bool = False,
    no_save: bool = False,
    view: bool = False,
    heatmap: bool = False,
    attention: bool = False,
    augment: bool = False,
    nms: Optional[str] = None,
    resize: Optional[str] = None,
    project: str = "runs/predict",
    name: str = "exp",
    exist_ok: bool = False,
    agnostic_nms: bool = False,
    save_crop: bool = False,
    vid_stride: int = 1,
    line_width: Optional[int] = None,
    hide_labels: bool = False,
    hide_conf: bool = False,
    txt_format: str = "pixels",
    save_conf: bool = False,
    capture_factory: Callable[..., Any] = cv2.VideoCapture,
    log: Log = print,
) -> int:
    """The command line: load, predict, report. Returns the exit status (0 done, 1 failed, 130 Ctrl-C)."""
    from ..utils.paths import remove_if_empty, results_folder

    def fail(message: str) -> int:
        print(f"error: {message}", file=sys.stderr)
        return 1

    if augment and (heatmap or attention):
        return fail("--heatmap and --attention show one network input; they cannot be combined with --augment")
    if source is None:
        return fail("no --source given (an image, a folder, a glob, a video, a webcam index or a stream URL)")
    # Issue 8's spelling `--classes FILE` (a class-names file) is accepted alongside --classes-file; a file
    # named like a class index or name (`7`, `person`, without suffix or folder) does not turn a filter into one
    if (classes and len(classes) == 1 and classes_file is None and Path(classes[0]).is_file()
            and (Path(classes[0]).suffix or os.sep in classes[0])):
        classes_file, classes = classes[0], None
    if not str(source).strip():
        return fail("--source is empty (an image, a folder, a glob, a video, a webcam index or a stream URL)")
    save_dir: Optional[Path] = None
    try:
        if attention and backend is None:  # the attention view reads gates off the PyTorch module
            backend = "torch"
        detector = Detector.load(weights, classes_file, num_classes, device, backend, precision, img_size,
                                 conf, iou, max_det, classes, use_exports=True, augment=augment, nms=nms,
                                 resize=resize, cfg=cfg,
                                 long_run=backend is None and precision is None and _long_run(source, vid_stride))
        detector.agnostic = agnostic_nms
        log(detector.describe() + (f", test-time augmentation {_views(detector.augment)}" if augment else ""))
        if not no_save or save_txt or save_json or save_crop:
            save_dir = results_folder(Path(project) / name, exist_ok)
        summary = predict(detector, source, save_dir, not no_save, save_txt, save_json, view, heatmap, attention,
                          capture_factory, log, save_crop=save_crop, vid_stride=vid_stride, line_width=line_width,
                          hide_labels=hide_labels, hide_conf=hide_conf, txt_format=txt_format, save_conf=save_conf)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (OSError, SourceError, ValueError, TypeError) as e:  # OSError: a folder that cannot be written
        remove_if_empty(save_dir)
        kept = f"; the results so far are in {save_dir}" if save_dir is not None and save_dir.exists() else ""
        return fail(f"{e}{kept}")
    if summary.processed == 0 and not summary.interrupted:
        remove_if_empty(save_dir)
        return fail(f"{source}: nothing could be read, so nothing was predicted")
    left = [f"{len(summary.skipped)} skipped"] if summary.skipped else []
    left += [f"{len(summary.stopped_early)} stopped early"] if summary.stopped_early else []
    skipped = f", {', '.join(left)} (see the warnings)" if left else ""
    counted = f"{summary.images} images" + (f", {summary.frames} frames" if summary.frames else "")
    log(f"done: {counted}, {summary.boxes} boxes{skipped}"
        + (f"; results in {summary.save_dir}" if summary.save_dir is not None else ""))
    return 130 if summary.interrupted else 0
