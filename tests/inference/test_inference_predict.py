"""tools/predict.py on each kind of source: annotated outputs, every video frame, txt/json agreeing with
the API, a stand-in webcam, Ctrl-C, and one clear line for each bad input."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from yolo_attn.inference.detector import Detector
from yolo_attn.inference.sources import SourceError, open_sources

from .helpers import FakeCapture, count_frames, make_checkpoint, run_predict_tool, write_images, write_video

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "cbam.pt", phi=2)


_run = run_predict_tool


def _read_txt(path: Path):
    rows = np.loadtxt(path, ndmin=2)
    return rows[:, 0].astype(int), rows[:, 1], rows[:, 2:6]


def test_folder_with_txt_and_json_agreeing_with_the_api(ckpt, tmp_path, capsys):
    images = write_images(tmp_path / "in", 3)
    (tmp_path / "in" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    assert _run(ckpt, tmp_path / "in", tmp_path / "runs", "--save-txt", "--save-json") == 0
    out = tmp_path / "runs" / "exp"
    assert "skipping" in capsys.readouterr().out and "broken.jpg" not in {p.name for p in out.iterdir()}
    records = json.loads((out / "predictions.json").read_text())
    det = Detector.load(ckpt)
    for path in images:
        annotated = cv2.imread(str(out / path.name))
        assert annotated is not None and annotated.shape == cv2.imread(str(path)).shape
        expected = det(path)
        assert len(expected) > 0
        labels, scores, boxes = _read_txt(out / "labels" / f"{path.stem}.txt")
        np.testing.assert_array_equal(labels, expected.labels)
        np.testing.assert_allclose(scores, expected.scores, atol=1e-5)
        np.testing.assert_allclose(boxes, expected.boxes, atol=0.01)
        mine = [r for r in records if r["image_id"] == path.stem]
        assert [r["category_id"] for r in mine] == expected.labels.tolist()
        assert [r["category_name"] for r in mine] == expected.names
        xywh = np.array([r["bbox"] for r in mine])
        np.testing.assert_allclose(xywh[:, :2], expected.boxes[:, :2], atol=0.01)
        np.testing.assert_allclose(xywh[:, :2] + xywh[:, 2:], expected.boxes[:, 2:], atol=0.01)
    # a second run gets a new folder; --no-save writes no images; a glob works as a source
    assert _run(ckpt, tmp_path / "in" / "img*.png", tmp_path / "runs", "--no-save", "--save-txt") == 0
    assert sorted(p.name for p in (tmp_path / "runs" / "exp2").iterdir()) == ["labels"]
    # --nms darknet reaches the detector: its labels are the API's with nms="darknet"
    assert _run(ckpt, images[0], tmp_path / "runs", "--no-save", "--save-txt", "--nms", "darknet") == 0
    labels, scores, _ = _read_txt(tmp_path / "runs" / "exp3" / "labels" / f"{images[0].stem}.txt")
    expected = Detector.load(ckpt, nms="darknet")(images[0])
    np.testing.assert_array_equal(labels, expected.labels)
    np.testing.assert_allclose(scores, expected.scores, atol=1e-5)
    # and --resize stretch: its labels are the API's with resize="stretch"
    assert _run(ckpt, images[0], tmp_path / "runs", "--no-save", "--save-txt", "--resize", "stretch") == 0
    labels, _, boxes = _read_txt(tmp_path / "runs" / "exp4" / "labels" / f"{images[0].stem}.txt")
    expected = Detector.load(ckpt, resize="stretch")(images[0])
    np.testing.assert_array_equal(labels, expected.labels)
    np.testing.assert_allclose(boxes, expected.boxes, atol=0.01)


def test_video_keeps_every_frame_fps_and_size(ckpt, tmp_path):
    video = write_video(tmp_path / "clip.mp4", frames=6, size=(160, 120), fps=12.0)
    assert _run(ckpt, video, tmp_path / "runs", "--save-json", "--heatmap") == 0
    out = tmp_path / "runs" / "exp" / "clip.mp4"
    assert count_frames(out) == 6
    capture = cv2.VideoCapture(str(out))
    assert capture.get(cv2.CAP_PROP_FPS) == pytest.approx(12.0)
    assert (capture.get(cv2.CAP_PROP_FRAME_WIDTH), capture.get(cv2.CAP_PROP_FRAME_HEIGHT)) == (160, 120)
    capture.release()
    frames = {r["frame"] for r in json.loads((tmp_path / "runs" / "exp" / "predictions.json").read_text())}
    assert 0 in frames  # the first frame is predicted, not swallowed by the open check


def test_a_folders_videos_are_opened_one_at_a_time(ckpt, tmp_path, capsys):
    """Listing a folder opened every video in it at once: 300 clips held 900 decoder threads and 1.8 GB. One
    that cannot be read, or written (a size the encoder refuses), is skipped; the others are predicted."""
    folder = tmp_path / "clips"
    folder.mkdir()
    for name in ("a.mp4", "b.mp4", "c.mp4", "d.mp4"):
        (folder / name).write_bytes(b"")  # the stand-in captures below read nothing from the files
    captures = []

    def factory(spec):
        assert all(c.released for c in captures), "a video was opened while another one was still open"
        size = (1, 1) if spec.endswith("d.mp4") else (96, 64)  # 1x1: the mp4v encoder refuses it
        captures.append(FakeCapture(frames=3, size=size, opened=not spec.endswith("b.mp4"))(spec))
        return captures[-1]

    assert all(not s.opened for s in open_sources(folder, capture_factory=factory)) and not captures
    assert _run(ckpt, folder, tmp_path / "runs", capture_factory=factory) == 0
    assert [Path(c.spec).name for c in captures] == ["a.mp4", "b.mp4", "c.mp4", "d.mp4"]
    assert all(c.released for c in captures)
    out = capsys.readouterr().out
    assert f"warning: skipping {folder / 'b.mp4'}: cannot open this video" in out
    assert f"warning: skipping {folder / 'd.mp4'}: " in out and "cannot write a 1x1 video here" in out
    assert "6 frames" in out and "2 skipped (see the warnings)" in out
    assert [count_frames(tmp_path / "runs" / "exp" / name) for name in ("a.mp4", "c.mp4")] == [3, 3]


def test_webcam_through_a_stand_in_capture(ckpt, tmp_path):
    camera = FakeCapture(frames=5)
    assert _run(ckpt, "0", tmp_path / "runs", "--view", capture_factory=camera) == 0
    assert camera.released
    assert count_frames(tmp_path / "runs" / "exp" / "webcam0.mp4") == 5


def test_ctrl_c_releases_the_writer_and_keeps_the_video(ckpt, tmp_path):
    camera = FakeCapture(frames=10, interrupt_at=4)
    assert _run(ckpt, "0", tmp_path / "runs", capture_factory=camera) == 130
    assert camera.released
    assert count_frames(tmp_path / "runs" / "exp" / "webcam0.mp4") == 4


def test_view_without_display_runs_headless(ckpt, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    image = write_images(tmp_path / "in", 1)[0]
    assert _run(ckpt, image, tmp_path / "runs", "--view") == 0
    assert "running headless" in capsys.readouterr().out


def test_augment_runs_the_views_and_refuses_the_single_view_overlays(ckpt, tmp_path, capsys):
    folder = tmp_path / "imgs"
    write_images(folder, 2)
    logs = []
    assert _run(ckpt, folder, tmp_path / "out", "--augment", "--save-json", log=logs.append) == 0
    assert "test-time augmentation 1 1.3 flipped 0.83" in logs[0]
    plain = Detector.load(ckpt)
    plain.augment = True
    expected = plain(sorted(folder.glob("*.png")))
    records = json.loads((tmp_path / "out" / "exp" / "predictions.json").read_text())
    assert len(records) == sum(len(d) for d in expected) > 0
    assert _run(ckpt, folder, tmp_path / "out", "--augment", "--heatmap") == 1
    assert "cannot be combined with --augment" in capsys.readouterr().err


def test_heatmap_and_attention_change_the_picture(ckpt, tmp_path, capsys):
    image = write_images(tmp_path / "in", 1)[0]
    for flag in ("", "--heatmap", "--attention"):
        assert _run(ckpt, image, tmp_path / "runs", *([flag] if flag else [])) == 0
    plain, heat, attn = (cv2.imread(str(tmp_path / "runs" / d / image.name)) for d in ("exp", "exp2", "exp3"))
    assert np.abs(plain.astype(int) - heat).mean() > 5 and np.abs(plain.astype(int) - attn).mean() > 5
    assert "attn_p5: top channels" in capsys.readouterr().out


def test_attention_on_a_model_without_attention_is_one_line(tmp_path, capsys):
    ckpt = make_checkpoint(tmp_path / "plain.pt", phi=0)
    image = write_images(tmp_path / "in", 1)[0]
    assert _run(ckpt, image, tmp_path / "runs", "--attention") == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no attention blocks" in err


@pytest.mark.parametrize("make_source, message", [
    (lambda d: d / "missing.jpg", "no such file or folder"),
    (lambda d: (d / "empty").mkdir() or d / "empty", "no images or videos"),
    (lambda d: (d / "fake.mp4").write_bytes(b"\x00" * 64) and d / "fake.mp4", "cannot open this video"),
    (lambda d: (d / "only_bad").mkdir() or (d / "only_bad" / "x.png").write_text("no") and d / "only_bad",
     "nothing could be read"),
])
def test_bad_sources_give_one_line_and_fail(ckpt, tmp_path, capfd, make_source, message):
    assert _run(ckpt, make_source(tmp_path), tmp_path / "runs") == 1
    err = capfd.readouterr().err  # capfd: OpenCV and FFmpeg log straight to file descriptor 2
    assert err.startswith("error: ") and message in err and err.count("\n") == 1
    assert not (tmp_path / "runs" / "exp").exists() or message == "nothing could be read"


def test_a_run_that_predicts_nothing_leaves_no_folder(ckpt, tmp_path, capsys):
    """With --save-json it left runs/exp holding an empty predictions.json."""
    (tmp_path / "only_bad").mkdir()
    (tmp_path / "only_bad" / "x.png").write_text("no")
    assert _run(ckpt, tmp_path / "only_bad", tmp_path / "runs", "--save-json", "--save-txt") == 1
    assert "nothing could be read" in capsys.readouterr().err
    assert not (tmp_path / "runs" / "exp").exists()


def test_an_unusable_project_or_source_is_one_line(ckpt, tmp_path, capsys):
    """A file where the results folder goes, a folder that cannot be written: tracebacks before; an empty
    --source predicted the current folder."""
    image = write_images(tmp_path / "in", 1)[0]
    (tmp_path / "afile").write_text("")
    assert _run(ckpt, image, tmp_path / "afile" / "sub") == 1
    assert capsys.readouterr().err == f"error: {tmp_path / 'afile'}: a file stands where the results folder goes\n"
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        if not os.access(locked, os.W_OK):  # root writes anywhere
            assert _run(ckpt, image, locked) == 1
            assert capsys.readouterr().err == f"error: {locked}: no permission to make the results folder exp there\n"
    finally:
        locked.chmod(0o755)
    for empty in ("", "  "):
        assert _run(ckpt, empty, tmp_path / "runs") == 1
        assert "--source is empty" in capsys.readouterr().err


def test_a_class_filter_named_like_a_file_here_stays_a_filter(ckpt, tmp_path, capsys, monkeypatch):
    """`--classes 1` with a file named 1 in the current folder was read as a class-names file (and the filter
    dropped); a path with a suffix still is one (Issue 8's `--classes FILE`)."""
    import yolo_attn.inference.predict as predict_module

    seen = []
    real = predict_module.Detector.load
    monkeypatch.setattr(predict_module.Detector, "load", lambda *a, **kw: seen.append(a) or real(*a, **kw))
    image = write_images(tmp_path / "in", 1)[0]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "1").write_text("x\n")
    (tmp_path / "names.txt").write_text("a\nb\n")
    assert _run(ckpt, image, tmp_path / "runs", "--classes", "1") == 0
    assert seen[-1][1] is None and seen[-1][10] == ["1"]  # classes_file, keep_classes
    assert _run(ckpt, image, tmp_path / "runs", "--classes", "names.txt") == 0
    assert seen[-1][1] == "names.txt" and seen[-1][10] is None


def test_absent_webcam(ckpt, tmp_path, capsys):
    assert _run(ckpt, "0", tmp_path / "runs", capture_factory=FakeCapture(opened=False)) == 1
    assert "no webcam at index 0" in capsys.readouterr().err
    assert _run(None, "0", tmp_path / "runs") == 1  # no --weights at all
    assert "no weights given" in capsys.readouterr().err


def test_source_kinds(tmp_path, monkeypatch):
    write_images(tmp_path, 2)
    write_video(tmp_path / "clip.avi", frames=3)
    assert [s.kind for s in open_sources(tmp_path)] == ["images", "video"]  # a folder may mix both
    camera = FakeCapture(frames=2)
    (stream,) = open_sources("rtsp://camera.local/live", capture_factory=camera)
    assert (stream.kind, stream.name, camera.spec) == ("stream", "stream", "rtsp://camera.local/live")
    assert [f.index for f in stream] == [0, 1]
    (webcam,) = open_sources("0", capture_factory=FakeCapture(frames=1))
    assert (webcam.kind, webcam.spec, webcam.fps) == ("webcam", 0, 30.0)  # fps 0 reported -> 30
    write_images(tmp_path / "2024", 1)  # a folder named with digits, given as a relative path, is the folder
    monkeypatch.chdir(tmp_path)
    assert [s.kind for s in open_sources("2024", capture_factory=FakeCapture(opened=False))] == ["images"]
    assert open_sources(2024, capture_factory=FakeCapture(frames=1))[0].kind == "webcam"  # an int: a webcam


def test_a_txt_list_of_paths_is_a_source(tmp_path, monkeypatch):
    """One path per line, as YOLOv5 and Ultralytics take them and Darknet's train.txt lists them: relative to
    the current folder, else to the list's; a folder stands for its files; a missing path is warned about."""
    images = write_images(tmp_path / "data" / "images", 3)
    write_video(tmp_path / "data" / "clip.avi", frames=2)
    more = write_images(tmp_path / "more", 2)
    listing = tmp_path / "data" / "list.txt"
    (tmp_path / "data" / "notes.md").write_text("not an image")
    (tmp_path / "more" / "README").write_text("a folder's other files are passed over quietly")
    listing.write_text(f"\ufeff# picked\nimages/{images[0].name}\n{images[2]}\n\nclip.avi\ngone.jpg\n"
                       f"../more\nnotes.md\n", encoding="utf-8")
    warnings = []
    monkeypatch.chdir(tmp_path)
    sources = open_sources(listing, warn=warnings.append)
    assert [s.kind for s in sources] == ["images", "video"]
    assert [p.resolve() for p in sources[0].files] == [images[0], images[2], *more]  # in the list's order
    assert warnings == [f"warning: {listing}: 1 listed path(s) not found, left out: gone.jpg",
                        f"warning: {listing}: 1 listed path(s) not an image or video (by extension), left out: "
                        f"notes.md"]
    (tmp_path / "data" / "images" / "list.txt").write_text(f"{images[1].name}\n")  # beside the list, not here
    assert open_sources("data/images/list.txt")[0].files == [Path("data/images") / images[1].name]
    (tmp_path / "empty.txt").write_text("nothing.jpg\n")
    with pytest.raises(SourceError, match="empty.txt: lists no images or videos"):
        open_sources(tmp_path / "empty.txt", warn=warnings.append)


def test_command_line_without_weights_says_how_to_get_them(tmp_path):
    """The real script in a fresh process: one line naming both ways to get weights, exit 1."""
    done = subprocess.run([sys.executable, str(ROOT / "tools" / "predict.py"), "--weights", "nope.pt",
                           "--source", "x.jpg"], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 1 and done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert "nope.pt: no such weights file" in done.stderr
    assert "python tools/train.py" in done.stderr and "python tools/convert.py" in done.stderr


def test_darknet_weights_take_a_class_names_file(tmp_path, capsys):
    from yolo_attn.models import build_model
    from yolo_attn.models.darknet import save_darknet_weights

    weights = tmp_path / "tiny.weights"
    save_darknet_weights(build_model(0, 2), weights)
    (tmp_path / "two.names").write_text("apple\npear\n")
    image = write_images(tmp_path / "in", 1)[0]
    assert _run(weights, image, tmp_path / "runs") == 1  # no names: says how to give them
    assert "--classes" in capsys.readouterr().err
    for flag in ("--classes-file", "--classes"):  # issue 8 spells it --classes FILE
        assert _run(weights, image, tmp_path / "runs", flag, str(tmp_path / "two.names"), "--img-size", "64") == 0
    assert "2 classes" in capsys.readouterr().out


def test_sources_sharing_a_name_get_their_own_outputs(ckpt, tmp_path):
    """a/img.png and b/img.png (a glob), x.png and x.jpg, clip.mp4 and clip.avi: each keeps its own annotated
    file, labels and JSON image id; names seen once are unchanged; one warning."""
    for sub, seed in (("a", 0), ("b", 1)):
        src = write_images(tmp_path / "in" / sub, 1, seed=seed)[0]
        src.rename(src.with_name("img.png"))
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    cv2.imwrite(str(mixed / "x.png"), cv2.imread(str(tmp_path / "in" / "a" / "img.png")))
    cv2.imwrite(str(mixed / "x.jpg"), cv2.imread(str(tmp_path / "in" / "b" / "img.png")))
    write_video(mixed / "clip.mp4", frames=3, seed=0)
    write_video(mixed / "clip.avi", frames=2, seed=1)
    logs = []
    assert _run(ckpt, tmp_path / "in" / "*" / "img.png", tmp_path / "runs", "--save-txt", "--save-json",
                log=logs.append) == 0
    assert sum("same name as an earlier source" in line for line in logs) == 1
    out = tmp_path / "runs" / "exp"
    assert sorted(p.name for p in out.glob("*.png")) == ["img.png", "img_2.png"]
    det = Detector.load(ckpt)
    records = json.loads((out / "predictions.json").read_text())
    for source, stem in ((tmp_path / "in" / "a" / "img.png", "img"), (tmp_path / "in" / "b" / "img.png", "img_2")):
        expected = det(source)
        labels, _, boxes = _read_txt(out / "labels" / f"{stem}.txt")
        np.testing.assert_array_equal(labels, expected.labels)
        np.testing.assert_allclose(boxes, expected.boxes, atol=0.01)
        assert sum(r["image_id"] == stem for r in records) == len(expected) > 0

    assert _run(ckpt, mixed, tmp_path / "runs", "--save-txt") == 0
    out = tmp_path / "runs" / "exp2"
    assert {"x.jpg", "x_2.png", "clip.mp4", "clip_2.mp4"} <= {p.name for p in out.iterdir()}
    assert {p.name for p in (out / "labels").glob("x*.txt")} == {"x.txt", "x_2.txt"}
    assert sorted(count_frames(out / n) for n in ("clip.mp4", "clip_2.mp4")) == [2, 3]
    assert len(list((out / "labels").glob("clip_2_*.txt"))) == 3  # clip.mp4 comes second: clip_2, 3 frames


def test_json_image_ids_name_one_image_or_frame_each(ckpt, tmp_path):
    """0001.png and 1.png were both image 1, and the frames of two videos shared ids 0, 1, ..."""
    folder = tmp_path / "in"
    for path, name in zip(write_images(folder, 3), ("0001.png", "1.png", "000000397133.png")):
        path.rename(folder / name)
    write_video(folder / "clip.mp4", frames=2, seed=0)
    write_video(folder / "clip.avi", frames=2, seed=1)
    assert _run(ckpt, folder, tmp_path / "runs", "--save-json", "--no-save", "--conf", "0.001") == 0
    records = json.loads((tmp_path / "runs" / "exp" / "predictions.json").read_text())
    sources = {}
    for r in records:
        sources.setdefault(r["image_id"], set()).add((r["file_name"], r.get("frame")))
    assert all(len(named) == 1 for named in sources.values()), sources
    by_file = {next(iter(named)): image_id for image_id, named in sources.items()}
    assert by_file[("0001.png", None)] == 1 and by_file[("1.png", None)] == "1"  # listed in this order
    assert by_file[("000000397133.png", None)] == 397133  # COCO's file names give COCO's ids
    assert {by_file[(name, frame)] for name in ("clip", "clip_2") for frame in (0, 1)} == {
        "clip_0", "clip_1", "clip_2_0", "clip_2_1"}


def test_an_existing_file_with_glob_characters_in_its_name(tmp_path):
    """'shot[1].png' names a file; read as a pattern it would match 'shot1.png' instead."""
    image = write_images(tmp_path, 1)[0]
    literal = image.rename(tmp_path / "shot[1].png")
    decoy = write_images(tmp_path / "other", 1, seed=5)[0].rename(tmp_path / "shot1.png")
    (source,) = open_sources(literal)
    assert source.files == [literal]
    (question,) = open_sources(literal.rename(tmp_path / "what?.png"))
    assert question.files == [tmp_path / "what?.png"]
    (pattern,) = open_sources(tmp_path / "shot?.png")  # no such file: a pattern, as before
    assert pattern.files == [decoy]


def test_runs_started_together_get_separate_folders(ckpt, tmp_path):
    """Both runs pick their folder before opening the source (a camera can take seconds): the name must be
    claimed, by creating the folder, when it is picked."""
    import threading

    both_opening = threading.Barrier(2, timeout=30)

    def camera(spec):
        both_opening.wait()  # each run has picked its folder by now
        return FakeCapture(frames=3)(spec)

    codes = {}

    def run(key):
        codes[key] = _run(ckpt, "0", tmp_path / "runs", capture_factory=camera, log=lambda s: None)

    threads = [threading.Thread(target=run, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert codes == {0: 0, 1: 0}
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["exp", "exp2"]
    assert [count_frames(tmp_path / "runs" / d / "webcam0.mp4") for d in ("exp", "exp2")] == [3, 3]


def test_a_bad_device_is_one_line(ckpt, tmp_path, capsys, monkeypatch):
    import torch

    image = write_images(tmp_path / "in", 1)[0]
    assert _run(ckpt, image, tmp_path / "runs", "--device", "foo") == 1
    err = capsys.readouterr().err
    assert err == "error: unknown device 'foo'; use cpu, cuda or cuda:N\n"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert _run(ckpt, image, tmp_path / "runs", "--device", "cuda") == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "CUDA is not available" in err and "--device cpu" in err
    assert _run(ckpt, image, tmp_path / "runs", "--device", "cpu", "--precision", "fp16") == 1  # ran, emulated
    assert capsys.readouterr().err == "error: fp16 runs on CUDA; on a CPU use --precision fp32 or bf16\n"
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


class FailingCapture(FakeCapture):
    """A video whose decoder raises at frame ``fail_at``; reports ``count`` frames in its header."""

    def __init__(self, fail_at=None, count=0, **kw):
        super().__init__(**kw)
        self.fail_at, self.count = fail_at, count

    def read(self):
        if self.fail_at is not None and self.read_count == self.fail_at:
            raise cv2.error("decoder crashed")
        return super().read()

    def get(self, prop):
        return float(self.count) if prop == cv2.CAP_PROP_FRAME_COUNT else 0.0


def test_a_video_failing_mid_way_is_left_and_the_folder_goes_on(ckpt, tmp_path, capsys):
    folder = tmp_path / "clips"
    folder.mkdir()
    for name in ("a.mp4", "b.mp4", "c.mp4", "d.mp4"):
        (folder / name).write_bytes(b"")
    captures = {}
    fail_at = {"b.mp4": 2, "d.mp4": 0}  # d: on the first frame, read when the video is opened

    def factory(spec):
        captures[Path(spec).name] = FailingCapture(fail_at=fail_at.get(Path(spec).name), frames=4)
        return captures[Path(spec).name]

    assert _run(ckpt, folder, tmp_path / "runs", capture_factory=factory) == 0
    out = capsys.readouterr().out
    assert f"warning: {folder / 'b.mp4'}: reading frame 2 failed (cv2.error: decoder crashed)" in out
    assert f"warning: skipping {folder / 'd.mp4'}: reading frame 0 failed" in out
    assert "1 skipped, 1 stopped early (see the warnings)" in out and all(c.released for c in captures.values())
    counts = [count_frames(tmp_path / "runs" / "exp" / name) for name in ("a.mp4", "b.mp4", "c.mp4")]
    assert counts == [4, 2, 4]  # b's first two frames are written and its file is whole

    # the only source: the run fails in one line naming the file and the frame (no traceback), and says where
    # the frames done are
    video = folder / "a.mp4"
    for at in (1, 0):
        capture = FailingCapture(fail_at=at, frames=4)
        assert _run(ckpt, video, tmp_path / "runs", capture_factory=capture) == 1
        err = capsys.readouterr().err
        assert f"{video}: reading frame {at} failed" in err and capture.released
        assert ("the results so far are in" in err) == (at > 0)
    assert _run(ckpt, "0", tmp_path / "runs", capture_factory=FailingCapture(fail_at=2, frames=4)) == 1
    assert "error: webcam 0: reading frame 2 failed" in capsys.readouterr().err


@pytest.mark.parametrize("frames, count, warned", [(5, 100, True), (5, 6, False), (5, 0, False)])
def test_a_video_shorter_than_its_header_says_is_reported(ckpt, tmp_path, capsys, frames, count, warned):
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"")
    capture = FailingCapture(frames=frames, count=count)
    assert _run(ckpt, video, tmp_path / "runs", "--no-save", capture_factory=capture) == 0
    out = capsys.readouterr().out
    assert (f"warning: {video}: ended after 5 of the {count} frames its header gives" in out) == warned
