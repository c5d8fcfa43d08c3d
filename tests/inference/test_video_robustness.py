"""Video failures that used to crash or pass silently: Ctrl-C on a stalled stream, a failed video write, --view
with no reachable display, high-fps files, a stream that stops sending, odd frame sizes."""
from __future__ import annotations

import socket
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

from yolo_attn.inference import sources, video
from yolo_attn.inference.sources import SourceError, VideoSink, VideoStream, Viewer, display_available

from .helpers import count_frames, make_checkpoint, run_predict_tool, write_video


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt", phi=0)


_run = run_predict_tool


class StallingCapture:
    """A stream that gives ``frames`` frames, then stalls: read() blocks until ``resume`` is set. Records a
    release() that comes while a read is in progress (FFmpeg frees what that read uses: a crash)."""

    def __init__(self, frames=2, size=(64, 48)):
        self.frames, self.size = frames, size
        self.resume, self.in_read = threading.Event(), threading.Event()
        self.reads, self.reading = 0, False
        self.released = threading.Event()
        self.released_during_read = False

    def __call__(self, spec):  # the capture factory
        return self

    def isOpened(self):
        return True

    def read(self):
        self.reading = True
        try:
            if self.reads >= self.frames:
                self.in_read.set()
                self.resume.wait(5.0)
                return False, None
            self.reads += 1
            return True, np.zeros((self.size[1], self.size[0], 3), np.uint8)
        finally:
            self.reading = False

    def grab(self):
        return True

    def get(self, prop):
        return 0.0

    def release(self):
        self.released_during_read |= self.reading
        self.released.set()


def test_close_during_a_stalled_read_leaves_the_release_to_the_reader():
    capture = StallingCapture(frames=2)
    stream = VideoStream("rtsp://camera/live", "stream", capture)
    frames = []
    reader = threading.Thread(target=lambda: frames.extend(stream), daemon=True)
    reader.start()
    assert capture.in_read.wait(5.0)
    stream.close()  # from another thread, while the read stalls (Ctrl-C in predict)
    assert not capture.released.is_set() and not stream.opened
    capture.resume.set()  # the read returns: its thread releases the capture
    reader.join(5.0)
    assert capture.released.is_set() and not capture.released_during_read
    assert len(frames) == 2
    stream.close()  # idempotent


def test_stopping_a_pipeline_on_a_stalled_stream_does_not_release_under_the_read(monkeypatch):
    """predict's path: the pipeline stops (Ctrl-C), waits _READ_WAIT_S for the read, then the source is closed."""
    monkeypatch.setattr(video, "_READ_WAIT_S", 0.2)
    capture = StallingCapture(frames=1)
    stream = VideoStream("http://camera/video.mjpg", "stream", capture)
    results = video.pipelined(stream, lambda frame: frame.index, workers=1)
    assert next(results)[1] == 0
    assert capture.in_read.wait(5.0)
    results.close()  # gives up on the stalled read after 0.2 s
    stream.close()
    assert not capture.released_during_read and not capture.released.is_set()
    capture.resume.set()
    assert capture.released.wait(5.0) and not capture.released_during_read


def _frames(n, size=(64, 48)):
    rng = np.random.default_rng(0)
    return [rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8) for _ in range(n)]


REAL_VIDEO_WRITER = cv2.VideoWriter  # the tests below replace cv2.VideoWriter with TruncatingWriter


class TruncatingWriter:
    """cv2.VideoWriter whose file is cut short after release, as a full disk leaves it (no index at the end)."""

    def __init__(self, path, *args):
        self.path = Path(path)
        self.writer = REAL_VIDEO_WRITER(path, *args)

    def isOpened(self):
        return self.writer.isOpened()

    def write(self, frame):
        self.writer.write(frame)

    def release(self):
        self.writer.release()
        data = self.path.read_bytes()
        self.path.write_bytes(data[: len(data) // 2])


def test_a_video_that_cannot_be_read_back_is_an_error_not_a_result(tmp_path, monkeypatch):
    good = VideoSink(tmp_path / "good.mp4", 10.0, (64, 48))
    for frame in _frames(3):
        good.write(frame)
    good.close()
    assert count_frames(tmp_path / "good.mp4") == 3

    monkeypatch.setattr(sources.cv2, "VideoWriter", TruncatingWriter)
    sink = VideoSink(tmp_path / "bad.mp4", 10.0, (64, 48))
    for frame in _frames(3):
        sink.write(frame)
    with pytest.raises(SourceError, match="bad.mp4: writing the video failed.*disk is full"):
        sink.close()
    assert not (tmp_path / "bad.mp4").exists() and (tmp_path / ".bad.part.mp4").exists()
    sink.close()  # idempotent, no second error


def test_a_failed_video_write_fails_the_run_in_one_line(ckpt, tmp_path, monkeypatch, capsys):
    clip = write_video(tmp_path / "clip.mp4", frames=4, size=(64, 48))
    monkeypatch.setattr(sources.cv2, "VideoWriter", TruncatingWriter)
    assert _run(ckpt, clip, tmp_path / "runs") == 1
    captured = capsys.readouterr()
    err = [line for line in captured.err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("error: ") and "writing the video failed" in err[0], err
    assert "done:" not in captured.out
    assert not (tmp_path / "runs" / "exp" / "clip.mp4").exists()
    assert (tmp_path / "runs" / "exp" / ".clip.part.mp4").exists()


@pytest.fixture
def linux_with_gui(monkeypatch):
    """display_available as on Linux with OpenCV's Qt backend, and no display but what the test sets."""
    monkeypatch.setattr(sources.sys, "platform", "linux")
    monkeypatch.setattr(sources.cv2, "getBuildInformation", lambda: "  GUI:    QT5\n")
    for name in ("DISPLAY", "WAYLAND_DISPLAY", "XDG_RUNTIME_DIR"):
        monkeypatch.delenv(name, raising=False)


def test_view_with_a_display_set_but_no_x_server_runs_headless(tmp_path, monkeypatch, linux_with_gui):
    monkeypatch.setattr(sources, "X11_SOCKET_DIR", str(tmp_path))
    monkeypatch.setenv("DISPLAY", ":99")  # nothing listens there
    assert not display_available()
    warnings = []
    assert not Viewer(True, warn=warnings.append).enabled
    assert warnings == ["warning: --view needs a display; none found, running headless"]
    monkeypatch.setenv("DISPLAY", "127.0.0.1:99")  # TCP port 6099: refused
    assert not display_available()
    monkeypatch.delenv("DISPLAY")
    monkeypatch.setenv("WAYLAND_DISPLAY", "wayland-0")
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))  # no socket there
    assert not display_available()


def test_a_listening_display_socket_is_available(tmp_path, monkeypatch, linux_with_gui):
    folder = Path("/tmp") / f"yolo_attn_x11_{tmp_path.name[-20:]}"  # unix socket paths are short (108 bytes)
    folder.mkdir(exist_ok=True)
    monkeypatch.setattr(sources, "X11_SOCKET_DIR", str(folder))
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        server.bind(str(folder / "X7"))
        server.listen(1)
        monkeypatch.setenv("DISPLAY", ":7.0")
        assert display_available()
        monkeypatch.delenv("DISPLAY")
        monkeypatch.setenv("WAYLAND_DISPLAY", str(folder / "X7"))  # an absolute Wayland socket path
        assert display_available()
    finally:
        server.close()
        (folder / "X7").unlink(missing_ok=True)
        folder.rmdir()


class FixedCapture:
    """``frames`` frames at a reported fps, then the end (a stream: no more frames)."""

    def __init__(self, frames=3, fps=0.0, size=(64, 48)):
        self.frames, self.fps, self.size, self.reads = frames, fps, size, 0

    def __call__(self, spec):
        return self

    def isOpened(self):
        return True

    def read(self):
        if self.reads >= self.frames:
            return False, None
        self.reads += 1
        return True, np.zeros((self.size[1], self.size[0], 3), np.uint8)

    def grab(self):
        return self.read()[0]

    def get(self, prop):
        return self.fps if prop == cv2.CAP_PROP_FPS else 0.0

    def release(self):
        pass


@pytest.mark.parametrize("kind, reported, fps", [
    ("video", 480.0, 480.0), ("video", 1000.0, 1000.0), ("video", 90000.0, 30.0), ("video", 0.0, 30.0),
    ("stream", 480.0, 30.0), ("webcam", 1000.0, 30.0), ("stream", 25.0, 25.0)])
def test_high_fps_files_keep_their_fps_and_cameras_keep_the_guard(kind, reported, fps):
    assert VideoStream("x.mp4" if kind == "video" else 0, kind, FixedCapture(fps=reported)).fps == fps


def test_a_480_fps_video_is_written_at_480_fps(ckpt, tmp_path):
    clip = write_video(tmp_path / "slow.mp4", frames=4, size=(64, 48), fps=480.0)
    assert _run(ckpt, clip, tmp_path / "runs") == 0
    out = cv2.VideoCapture(str(tmp_path / "runs" / "exp" / "slow.mp4"))
    assert out.get(cv2.CAP_PROP_FPS) == pytest.approx(480.0) and out.get(cv2.CAP_PROP_FRAME_COUNT) == 4
    out.release()


def test_a_stream_that_stops_sending_is_reported(ckpt, tmp_path, capsys):
    assert _run(ckpt, "rtsp://camera/live", tmp_path / "runs", capture_factory=FixedCapture(frames=3)) == 0
    out = capsys.readouterr().out
    assert ("warning: stream rtsp://camera/live: no frame after 3 frames (the stream ended or stopped responding); "
            "the frames read are kept") in out
    assert "1 stopped early (see the warnings)" in out
    assert count_frames(tmp_path / "runs" / "exp" / "stream.mp4") == 3
    # a video file's end is its end: no warning
    clip = write_video(tmp_path / "clip.mp4", frames=3, size=(64, 48))
    assert _run(ckpt, clip, tmp_path / "runs") == 0
    assert "no frame after" not in capsys.readouterr().out


def test_an_odd_frame_size_is_said_to_lose_its_last_column_and_row(ckpt, tmp_path, capsys):
    assert _run(ckpt, "0", tmp_path / "runs", capture_factory=FixedCapture(frames=2, size=(65, 47))) == 0
    out = capsys.readouterr().out
    assert ("is written at 64x46: the mp4v encoder takes even sizes only, so each frame loses its last column "
            "and row") in out
    capture = cv2.VideoCapture(str(tmp_path / "runs" / "exp" / "webcam0.mp4"))
    ok, frame = capture.read()
    capture.release()
    assert ok and frame.shape[:2] == (46, 64)  # what the note says
    assert _run(ckpt, "0", tmp_path / "runs", capture_factory=FixedCapture(frames=2, size=(64, 48))) == 0
    assert "even sizes only" not in capsys.readouterr().out


def test_a_stream_closed_between_reads_ends_without_reading_again():
    capture = FixedCapture(frames=5)
    stream = VideoStream("rtsp://camera/live", "stream", capture)
    frames = iter(stream)
    next(frames)
    next(frames)
    stream.close()
    assert list(frames) == [] and capture.reads == 2
