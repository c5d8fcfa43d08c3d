"""A threaded video pipeline: decode, predict and encode overlap instead of taking turns.

On a small CPU the three stages cost the same order of time per 720p frame (decode ~3 ms, encode ~5 ms,
int8 inference ~10 ms on 2 cores), and OpenCV's codecs and the inference runtimes release the GIL, so
running them in threads gives nearly their sum back. :func:`pipelined` reads frames in a background thread
and runs the per-frame work in ``workers`` threads, yielding results in frame order; :class:`BackgroundWriter`
encodes in its own thread. With two workers each inference runs on one core (torch at one thread, OpenVINO in
two single-core streams), which sustains more frames per second than one two-core inference at a time.
"""
from __future__ import annotations

import queue
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from typing import Any, Callable, Iterable, Iterator, Optional, Tuple, TypeVar

import torch

from .hardware import torch_threads

__all__ = ["BackgroundWriter", "pipelined", "throughput_backend"]

T = TypeVar("T")
R = TypeVar("R")
_DONE = object()
_READ_WAIT_S = 10.0  # the longest a stopping pipeline waits for a read in progress (a stalled stream)


def _read_ahead(items: Iterable[T], depth: int, stop: threading.Event) -> Iterator[T]:
    """Iterate ``items`` in a background thread, ``depth`` items ahead; exceptions re-raise here."""
    buffer: "queue.Queue[Any]" = queue.Queue(maxsize=depth)

    def put(item: Any) -> bool:
        """Queue ``item`` unless the consumer has left (True when queued). Every put must watch ``stop``: a
        consumer that leaves early no longer takes items, and a plain put would block this thread for good."""
        while not stop.is_set():
            try:
                buffer.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put(item):
                    return
            put(_DONE)
        except BaseException as e:  # handed to the consumer, which raises it in the main thread
            put(e)

    thread = threading.Thread(target=produce, name="yolo_attn-reader", daemon=True)
    thread.start()
    try:
        while True:
            item = buffer.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        # the caller closes the source next: let the read in progress finish first. A read still stalled after
        # _READ_WAIT_S (a stream that stopped sending) is left to this daemon thread; VideoStream.close() then
        # leaves the capture's release to it, as releasing it under a running read crashes FFmpeg
        stop.set()
        deadline = time.monotonic() + _READ_WAIT_S
        while thread.is_alive() and time.monotonic() < deadline:
            _drain(buffer)  # frees a put already waiting, so the reader sees `stop` within one timeout
            thread.join(timeout=0.1)


def _drain(buffer: "queue.Queue[Any]") -> None:
    try:
        while True:
            buffer.get_nowait()
    except queue.Empty:
        pass


def pipelined(
    items: Iterable[T],
    process: Callable[[T], R],
    workers: int = 2,
    read_ahead: int = 4,
) -> Iterator[Tuple[T, R]]:
    """Yield ``(item, process(item))`` in the order of ``items``, with items read in a background thread and
    up to ``workers`` calls of ``process`` running at once.

    ``workers=1`` still overlaps reading with processing. While this runs, torch's intra-op threads are
    shared among the workers (more would oversubscribe the cores). Stopping early (``break``, an exception) stops the
    reader and waits for the calls in flight.
    """
    stop = threading.Event()
    workers = max(1, int(workers))
    source = _read_ahead(items, max(read_ahead, workers + 1), stop)
    pending: "deque[Tuple[T, Future]]" = deque()
    with ExitStack() as stack:
        if workers > 1:  # share torch's cores among the workers
            stack.enter_context(torch_threads(max(1, torch.get_num_threads() // workers)))
        pool = stack.enter_context(ThreadPoolExecutor(workers, thread_name_prefix="yolo_attn-worker"))
        stack.callback(stop.set)
        stack.callback(source.close)
        error: Optional[BaseException] = None
        while True:
            try:
                item = next(source)
            except StopIteration:
                break
            except (Exception, KeyboardInterrupt) as e:  # a failed read: first finish the frames already read
                error = e
                break
            pending.append((item, pool.submit(process, item)))
            if len(pending) >= workers:
                done, future = pending.popleft()
                yield done, future.result()  # a failed process() raises here, in frame order
        while pending:
            done, future = pending.popleft()
            yield done, future.result()
        if error is not None:
            raise error


class BackgroundWriter:
    """Calls ``write(frame)`` of a sink (:class:`~yolo_attn.inference.sources.VideoSink`) in a background
    thread, in order. :meth:`close` writes what is queued and closes the sink; it re-raises a write error."""

    def __init__(self, sink: Any, depth: int = 8):
        self.sink = sink
        self._queue: "queue.Queue[Any]" = queue.Queue(maxsize=depth)
        self._error: Optional[BaseException] = None
        self._drop = False  # set by a Ctrl-C in close(): what is still queued is not written
        self._thread = threading.Thread(target=self._run, name="yolo_attn-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            frame = self._queue.get()
            if frame is _DONE:
                return
            if self._error is None and not self._drop:
                try:
                    self.sink.write(frame)
                except BaseException as e:  # reported by write() or close() in the caller's thread
                    self._error = e

    def write(self, frame: Any) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put(frame)

    def close(self) -> None:
        """Idempotent: call it from ``finally``. A Ctrl-C while the queue drains drops what is left and still
        closes the sink (a video is only put in place by its close), then re-raises."""
        interrupted: Optional[BaseException] = None
        done_sent = False
        while self._thread.is_alive():
            try:
                if not done_sent:
                    self._queue.put(_DONE)
                    done_sent = True
                self._thread.join()
            except KeyboardInterrupt as e:
                interrupted, self._drop = e, True
        self.sink.close()
        if interrupted is not None:
            raise interrupted
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def __enter__(self) -> "BackgroundWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def throughput_backend(backend: Any, workers: int) -> Any:
    """The backend to use with ``workers`` concurrent callers: an OpenVINO model recompiled into ``workers``
    single-core streams (a latency-compiled one runs one request at a time); other backends as they are."""
    if workers <= 1 or getattr(backend, "name", None) != "openvino" or backend.hint == "THROUGHPUT":
        return backend
    return backend.with_hint("THROUGHPUT", workers)
