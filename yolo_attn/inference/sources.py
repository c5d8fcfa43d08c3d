"""Where frames come from and where annotated video goes: image files, folders, globs, video files, webcams
and streams; a video writer that is always released; a viewer that only opens where a display exists.

Frames are BGR uint8, as OpenCV reads and writes them. Bad input gives a :class:`SourceError` with one
clear line; OpenCV's own log output is silenced while opening, so users never see its internals.
"""
from __future__ import annotations

import glob
import math
import os
import socket
import sys
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, List, Optional, Tuple, Union

import cv2
import numpy as np

from ..data.records import IMAGE_SUFFIXES, BadImageError, read_image
from ..data.yolo_txt import read_list_file

__all__ = [
    "IMAGE_SUFFIXES",
    "VIDEO_SUFFIXES",
    "Frame",
    "ImageFiles",
    "SourceError",
    "VideoSink",
    "VideoStream",
    "Viewer",
    "display_available",
    "list_images",
    "open_sources",
]

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".m4v", ".mpg", ".mpeg", ".wmv", ".webm", ".flv", ".ts", ".gif")
STREAM_PREFIXES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://", "srt://")
DEFAULT_FPS = 30.0  # webcams and streams often report 0 fps
MAX_FILE_FPS = 1000.0  # slow-motion files go to 1000 fps; a larger value is a broken header
X11_SOCKET_DIR = "/tmp/.X11-unix"  # where a local X server's socket X<n> lies

# FFmpeg's own log (a failed open prints pages of internals; "moov atom not found" for a broken file) goes
# straight to stderr. OpenCV reads this once, when FFmpeg is first used in the process: so it is set on import,
# not around each open (a video written before would have fixed FFmpeg's level already). Our errors say what
# went wrong in one line.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")

CaptureFactory = Callable[..., "cv2.VideoCapture"]
Warn = Callable[[str], None]


class SourceError(ValueError):
    """A source that cannot be used; the message is one line meant for the user."""


@dataclass
class Frame:
    """One image to predict on."""

    image: np.ndarray  # (H, W, 3) uint8 BGR
    name: str  # file name for outputs: "bus.jpg", or the video's stem
    index: int = 0  # frame number in a video (0 for still images)
    path: str = ""


@contextmanager
def quiet_opencv() -> Iterator[None]:
    """Silence OpenCV's and FFmpeg's logging (failed opens print pages of internals) for the block."""
    previous = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    try:
        yield
    finally:
        cv2.utils.logging.setLogLevel(previous)


def list_images(folder: Union[str, os.PathLike]) -> List[Path]:
    """Image files directly in ``folder`` (sorted); a clear error when there are none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise SourceError(f"{folder}: no such folder")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise SourceError(f"{folder}: no images in this folder (looked for {', '.join(IMAGE_SUFFIXES[:5])}, ...)")
    return files


class ImageFiles:
    """Still images; an unreadable one is reported through ``warn`` and skipped (counted in ``skipped``)."""

    kind = "images"

    def __init__(self, files: List[Path], warn: Warn = print):
        self.files = files
        self.warn = warn
        self.skipped: List[str] = []

    def __len__(self) -> int:
        return len(self.files)

    def __iter__(self) -> Iterator[Frame]:
        for path in self.files:
            try:
                with quiet_opencv():
                    image = cv2.cvtColor(read_image(path), cv2.COLOR_RGB2BGR)
            except BadImageError as e:
                self.skipped.append(str(path))
                self.warn(f"warning: skipping {e}")
                continue
            yield Frame(image, path.name, 0, str(path))

    def close(self) -> None:
        pass


class VideoStream:
    """A video file, a webcam or a network stream, read through a ``cv2.VideoCapture``-like object.

    The first frame is read on opening (so a source that opens but yields nothing fails there, with a clear
    message) and is kept: iteration starts with it. ``stride`` N yields frames 0, N, 2N, ... (each keeps its
    number in the video as ``index``); the frames between are grabbed, not decoded. ``defer=True`` leaves the
    opening to :meth:`open`, for the videos of a folder: each holds a decoder (threads and frame buffers) while
    open, so they are opened one at a time, when their turn comes, not all at once when the folder is listed.

    Reads may run in another thread than :meth:`close` (the reader of :func:`~yolo_attn.inference.video.pipelined`):
    a capture is never released while a read on it is in progress, as FFmpeg would free what that read uses;
    a close that comes during a read leaves the release to the reading thread, once its read returns.
    """

    def __init__(self, spec: Union[str, int], kind: str, capture_factory: CaptureFactory = cv2.VideoCapture,
                 defer: bool = False, stride: int = 1):
        if int(stride) < 1:
            raise ValueError(f"the video frame stride must be 1 or more, not {stride}")
        self.spec, self.kind, self.stride = spec, kind, int(stride)
        self.name = {"webcam": f"webcam{spec}", "stream": "stream"}.get(kind) or Path(str(spec)).stem
        self._capture_factory = capture_factory
        self.capture: Optional[cv2.VideoCapture] = None
        self._first: Optional[np.ndarray] = None
        self.fps, self.frame_count, self.size = DEFAULT_FPS, None, (0, 0)
        self._lock = threading.Lock()  # guards `capture` and `_reading` between the reading thread and close()
        self._reading = False
        if not defer:
            self.open()

    @property
    def opened(self) -> bool:
        return self.capture is not None

    def open(self) -> "VideoStream":
        """Open the capture and read the first frame; a :class:`SourceError` when either fails."""
        if self.capture is not None:
            return self
        capture = None
        try:
            with quiet_opencv():
                capture = self._capture_factory(self.spec)
                opened = capture.isOpened()
                ok, first = capture.read() if opened else (False, None)
        except Exception as e:  # a decoder (or a stand-in capture) that raises on opening or on the first frame
            if capture is not None:
                capture.release()
            raise SourceError(self._read_error(0, e)) from e
        if not opened or not ok or first is None:
            capture.release()
            raise SourceError(self._open_error(opened))
        self.capture, self._first = capture, first
        fps = float(capture.get(cv2.CAP_PROP_FPS) or 0.0)
        # webcams and streams report 0, or bogus values like 1000 or 90000; a file's header is trusted further
        top = MAX_FILE_FPS if self.kind == "video" else 240.0
        self.fps = fps if math.isfinite(fps) and 0.0 < fps <= top else DEFAULT_FPS
        self.frame_count = _header_frame_count(capture) if self.kind == "video" else None
        self.size = (first.shape[1], first.shape[0])  # (w, h), from the frame itself
        return self

    def expected_frames(self) -> Optional[int]:
        """How many frames iterating will yield: a video file's frame count from its header (read by OpenCV
        for a moment when the stream is not open; 0 for a file it cannot open) over the stride; None for
        webcams, streams and files whose header has no count."""
        if self.kind != "video":
            return None
        count = self.frame_count
        if not self.opened:
            capture = None
            try:
                with quiet_opencv():
                    capture = cv2.VideoCapture(str(self.spec))
                    if not capture.isOpened():
                        return 0
                    count = _header_frame_count(capture)
            except Exception:  # noqa: BLE001 - a decoder that raises: the run itself will say so
                return 0
            finally:
                if capture is not None:
                    capture.release()
        return None if count is None else -(-count // self.stride)

    def _read_error(self, index: int, error: Exception) -> str:
        where = {"webcam": f"webcam {self.spec}", "stream": f"stream {self.spec}"}.get(self.kind, str(self.spec))
        kind = type(error).__name__
        module = type(error).__module__
        kind = kind if module == "builtins" else f"{module}.{kind}"  # cv2.error, not a bare "error"
        return f"{where}: reading frame {index} failed ({kind}: {error})"

    def _open_error(self, opened: bool) -> str:
        if self.kind == "webcam":
            return f"no webcam at index {self.spec} (none connected, in use, or no permission)"
        if self.kind == "stream":
            return f"{self.spec}: cannot open the stream (unreachable, or not a video stream)"
        if not opened:
            return f"{self.spec}: cannot open this video (not a video, or a codec OpenCV lacks)"
        return f"{self.spec}: no frame could be read from this video (empty or corrupt)"

    def __iter__(self) -> Iterator[Frame]:
        # kept: a close() from another thread sets self.capture to None, and this thread still has to release
        # the capture when that close() came during one of its reads
        capture = self.open().capture
        index = 0
        if self._first is not None:
            yield Frame(self._first, self.name, 0, str(self.spec))
            self._first, index = None, 1
        while True:
            with self._lock:
                if self.capture is not capture:  # closed between two reads
                    return
                self._reading = True
            try:
                with quiet_opencv():
                    for _ in range(-index % self.stride):  # to the next multiple of the stride
                        if not capture.grab():
                            return
                        index += 1
                    ok, image = capture.read()
            except Exception as e:  # a decoder (or a stand-in capture) that raises: name the video and the frame
                raise SourceError(self._read_error(index, e)) from e
            finally:
                with self._lock:
                    self._reading = False
                    closed = self.capture is not capture
                if closed:  # close() came during this read and left the release to this thread
                    capture.release()
            if not ok or image is None or closed:
                return
            yield Frame(image, self.name, index, str(self.spec))
            index += 1

    def close(self) -> None:
        """Release the capture; during a read in another thread, that thread releases it once its read returns
        (a stalled stream's read may never return: its thread is a daemon, so the process still exits)."""
        with self._lock:
            capture, self.capture = self.capture, None
            if capture is None or self._reading:
                return
        capture.release()


def _header_frame_count(capture: cv2.VideoCapture) -> Optional[int]:
    """A video file's frame count as its header gives it; None where it gives none (0, or a bogus negative)."""
    count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    return count if count > 0 else None


Source = Union[ImageFiles, VideoStream]


def open_sources(
    spec: Union[str, int, os.PathLike],
    capture_factory: CaptureFactory = cv2.VideoCapture,
    warn: Warn = print,
    vid_stride: int = 1,
    defer: bool = False,
) -> List[Source]:
    """Open what ``spec`` names: an image, a folder, a glob, a video file, a ``.txt`` list of paths (one per
    line), a webcam index or a stream URL. Videos, webcams and streams yield every ``vid_stride``-th frame.

    A folder or glob may hold images and videos: the images come as one :class:`ImageFiles`, each video as
    a :class:`VideoStream` that is not opened yet (see its ``defer``); ``defer=True`` leaves a video, webcam
    or stream named alone unopened too (a listing). Raises :class:`SourceError` when nothing usable is there.
    """
    text = str(spec).strip()
    # digits name a webcam, unless a file or folder of that name is here ("2024", a folder of images)
    if isinstance(spec, int) or (text.isdigit() and not Path(text).exists()):
        return [VideoStream(int(text), "webcam", capture_factory, defer=defer, stride=vid_stride)]
    if text.lower().startswith(STREAM_PREFIXES):
        return [VideoStream(text, "stream", capture_factory, defer=defer, stride=vid_stride)]
    path = Path(text).expanduser()
    # What exists is taken literally before anything is read as a pattern: "shot[1].jpg" is a file name, and
    # as a glob it would match "shot1.jpg" instead (or nothing).
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file())
        where = f"{path}: no images or videos in this folder"
    elif path.is_file() and path.suffix.lower() == ".txt":
        files = _listed_files(path, warn)
        where = f"{path}: lists no images or videos"
    elif path.is_file():
        if path.suffix.lower() in VIDEO_SUFFIXES:
            return [VideoStream(str(path), "video", capture_factory, defer=defer, stride=vid_stride)]
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            raise SourceError(f"{path}: not an image or video file (unknown extension '{path.suffix}')")
        return [ImageFiles([path], warn)]
    elif any(c in text for c in "*?["):
        files = sorted(Path(p) for p in glob.glob(str(path), recursive=True) if Path(p).is_file())
        where = f"{text}: no images or videos match this pattern"
    else:
        raise SourceError(f"{text}: no such file or folder (expected an image, a folder, a glob, a video, "
                          f"a webcam index or a stream URL)")
    images = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
    videos = [p for p in files if p.suffix.lower() in VIDEO_SUFFIXES]
    if not images and not videos:
        raise SourceError(where)
    sources: List[Source] = [ImageFiles(images, warn)] if images else []
    sources += [VideoStream(str(video), "video", capture_factory, defer=True, stride=vid_stride) for video in videos]
    return sources


def _listed_files(listing: Path, warn: Warn) -> List[Path]:
    """The files a list of paths names, one per line (Darknet's train.txt, YOLOv5's and Ultralytics' source
    lists): each relative to the current folder, else to the list's own; a folder stands for its files. Lines
    that name nothing, or a file that is neither an image nor a video, are warned about (the first few) and
    left out."""
    files: List[Path] = []
    missing: List[str] = []
    unknown: List[str] = []
    for entry in read_list_file(listing):
        if entry.startswith("#"):
            continue
        path = Path(entry).expanduser()
        if not path.exists() and not path.is_absolute():
            path = listing.parent / path
        if path.is_dir():
            files += sorted(p for p in path.iterdir() if p.is_file())
        elif path.is_file():
            if path.suffix.lower() in IMAGE_SUFFIXES or path.suffix.lower() in VIDEO_SUFFIXES:
                files.append(path)
            else:
                unknown.append(entry)
        else:
            missing.append(entry)
    for entries, problem in ((missing, "not found"), (unknown, "not an image or video (by extension)")):
        if entries:
            more = f" and {len(entries) - 3} more" if len(entries) > 3 else ""
            warn(f"warning: {listing}: {len(entries)} listed path(s) {problem}, left out: "
                 f"{', '.join(entries[:3])}{more}")
    return files


class VideoSink:
    """Writes annotated frames to an .mp4 at the source's fps and size; the mp4v encoder takes even sizes only, so
    an odd width or height loses its last column or row (``written_size``). It writes to a temporary name and
    moves it into place on :meth:`close`, which is idempotent: call it from ``finally``."""

    def __init__(self, path: Union[str, os.PathLike], fps: float, size: Tuple[int, int]):
        self.path = Path(path)
        self.size = size
        self.written_size = (size[0] - size[0] % 2, size[1] - size[1] % 2)  # what OpenCV's mp4v writer keeps
        self.frames = 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = self.path.with_name(f".{self.path.stem}.part{self.path.suffix}")
        with quiet_opencv():
            self._writer = cv2.VideoWriter(str(self._tmp), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
        if not self._writer.isOpened():
            raise SourceError(f"{self.path}: cannot write a {size[0]}x{size[1]} video here (no mp4v encoder, a "
                              f"size it refuses, or a read-only folder)")

    def write(self, frame: np.ndarray) -> None:
        if frame.ndim == 2 or frame.shape[2] != 3:  # mp4v skips (with a log line) what is not 3-channel BGR
            frame = cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR if frame.ndim == 2 or frame.shape[2] == 1
                                 else cv2.COLOR_BGRA2BGR)
        if (frame.shape[1], frame.shape[0]) != self.size:  # streams may change resolution mid-way
            frame = cv2.resize(frame, self.size)
        self._writer.write(frame)
        self.frames += 1

    def close(self) -> None:
        """Finish the video and move it into place; a :class:`SourceError` when what was written is no video."""
        if self._writer is None:
            return
        self._writer.release()
        self._writer = None
        if self.frames == 0:  # a header without frames plays nowhere: no video rather than a broken one
            self._tmp.unlink(missing_ok=True)
            return
        # VideoWriter.write returns nothing and a failed write only logs a line: a full disk would otherwise
        # put an unplayable file (no index) in place as the result
        if not _readable_video(self._tmp):
            raise SourceError(f"{self.path}: writing the video failed, the file is unreadable (the disk is full, or "
                              f"the folder became unwritable); what was written is left as {self._tmp.name}")
        os.replace(self._tmp, self.path)

    def __enter__(self) -> "VideoSink":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _readable_video(path: Path) -> bool:
    """True when ``path`` opens as a video and its first frame decodes (cheap: one frame, whatever the length)."""
    if not path.is_file():
        return False
    with quiet_opencv():
        capture = cv2.VideoCapture(str(path))
        try:
            return capture.isOpened() and capture.read()[0]
        finally:
            capture.release()


def display_available() -> bool:
    """True when an OpenCV window can open: a GUI backend is built in and (on Linux) a display server answers.

    Checked before any window call because OpenCV's Qt backend aborts the process without a display, also
    when $DISPLAY is set but nothing listens there (docker, ssh without X forwarding).
    """
    info = cv2.getBuildInformation()
    gui = info.split("GUI:", 1)[1].splitlines()[0].strip() if "GUI:" in info else "NONE"
    if gui.upper().startswith("NONE"):
        return False
    if sys.platform.startswith("linux"):
        return _wayland_reachable(os.environ.get("WAYLAND_DISPLAY")) or _x11_reachable(os.environ.get("DISPLAY"))
    return True


def _wayland_reachable(display: Optional[str]) -> bool:
    """True when the Wayland socket ``display`` names exists (a name in $XDG_RUNTIME_DIR, or an absolute path)."""
    if not display:
        return False
    path = Path(display) if os.path.isabs(display) else Path(os.environ.get("XDG_RUNTIME_DIR", "")) / display
    return path.is_socket()


def _x11_reachable(display: Optional[str]) -> bool:
    """True when the X server ``display`` names accepts a connection: ``:N`` (or ``unix:N``) is the local socket
    X<N>, ``host:N`` is TCP port 6000 + N there (ssh's X forwarding: ``localhost:10``)."""
    if not display:
        return False
    host, _, number = display.rpartition(":")
    number = number.split(".")[0]  # ":0.1" is screen 1 of display 0
    if not number.isdigit():
        return True  # a form this does not know: let Qt try, as before
    if host in ("", "unix"):
        # the socket file, else Linux's abstract socket of that name (visible in containers without the file)
        addresses = [os.path.join(X11_SOCKET_DIR, f"X{number}"), f"\0/tmp/.X11-unix/X{number}"]
        return any(_connects(address) for address in addresses)
    return _connects((host, 6000 + int(number)))


def _connects(address: Union[str, Tuple[str, int]]) -> bool:
    """True when a connection to ``address`` (a unix socket path, or host and TCP port) opens within a second."""
    try:
        if isinstance(address, str):
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
                probe.settimeout(1.0)
                probe.connect(address)
        else:
            socket.create_connection(address, timeout=1.0).close()
        return True
    except OSError:
        return False


@dataclass
class Viewer:
    """Shows frames in a window when ``enabled`` and a display exists; ``q`` (or Esc) asks to stop."""

    enabled: bool
    title: str = "yolo_attn"
    warn: Warn = print
    _open: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        if self.enabled and not display_available():
            self.warn("warning: --view needs a display; none found, running headless")
            self.enabled = False

    def show(self, frame: np.ndarray) -> bool:
        """Display ``frame``; returns False when the user asked to quit."""
        if not self.enabled:
            return True
        cv2.imshow(self.title, frame)
        self._open = True
        return (cv2.waitKey(1) & 0xFF) not in (ord("q"), 27)

    def close(self) -> None:
        if self._open:
            cv2.destroyWindow(self.title)
            self._open = False
