"""Frames read and pictures written beside the network: two small threads around a tracking loop.

:class:`FrameReader` decodes ahead of the consumer. From a file it keeps a few frames ready and
never drops one; from a live source (a webcam, a stream) it keeps only the newest frame, so a
consumer slower than the camera always works on the present, and counts the frames it dropped.
:class:`BackgroundWriter` draws and encodes the processed frames while the next one is tracked.
Decoding (PyAV), drawing (numpy) and encoding (FFmpeg) release the GIL for most of their work,
as ONNX Runtime and torch do, so the threads really overlap on a multi-core CPU.
"""
from __future__ import annotations

import collections
import threading
import time
from typing import Callable, Generic, Iterable, Iterator, TypeVar

Item = TypeVar("Item")

# Frames a file reader keeps decoded ahead: enough to ride over a slow frame, little memory.
READ_AHEAD = 4
# Frames waiting to be drawn and encoded before the tracking loop waits for the writer.
WRITE_BEHIND = 4


def is_live(source: object) -> bool:
    """Whether a video source name is a live one: a webcam index (``0``, ``"0"``) or a stream URL."""
    name = str(getattr(source, "name", source))
    return name.isdigit() or "://" in name


class FrameReader(Generic[Item]):
    """Iterate over ``frames`` (any iterable, e.g. a :class:`~posekit.io.video.VideoSource`) read by a thread.

    Args:
        frames: what to read; it is iterated in the reader thread only.
        live: keep only the newest item and drop the older unconsumed ones (webcams, streams);
            False keeps every item, in order, at most ``READ_AHEAD`` ahead (files).

    Attributes:
        dropped: items read but never handed out (live only).
        seconds: wall time the reader thread spent getting items (decoding).

    An error raised while reading is raised again to the consumer, after the items read before it.
    """

    def __init__(self, frames: Iterable[Item], live: bool = False) -> None:
        self.live = live
        self.dropped = 0
        self.seconds = 0.0
        self._pending: collections.deque[Item] = collections.deque()
        self._condition = threading.Condition()
        self._finished = self._stopped = False
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._read, args=(frames,), name="posekit-reader", daemon=True)
        self._thread.start()

    def _read(self, frames: Iterable[Item]) -> None:
        try:
            iterator = iter(frames)
            while True:
                began = time.perf_counter()
                item = next(iterator, _END)
                self.seconds += time.perf_counter() - began
                if item is _END:
                    return
                with self._condition:
                    while not self.live and len(self._pending) >= READ_AHEAD and not self._stopped:
                        self._condition.wait()
                    if self._stopped:
                        return
                    if self.live:  # the present replaces what the consumer had no time for
                        self.dropped += len(self._pending)
                        self._pending.clear()
                    self._pending.append(item)
                    self._condition.notify_all()
        except BaseException as error:  # handed to the consumer thread, which raises it
            self._error = error
        finally:
            with self._condition:
                self._finished = True
                self._condition.notify_all()

    def __iter__(self) -> Iterator[Item]:
        while True:
            with self._condition:
                while not self._pending and not self._finished:
                    self._condition.wait()
                if not self._pending:
                    if self._error is not None:
                        raise self._error
                    return
                item = self._pending.popleft()
                self._condition.notify_all()
            yield item

    def close(self, timeout: float = 2.0) -> None:
        """Stop reading (the thread ends after the item it is reading)."""
        with self._condition:
            self._stopped = True
            self._pending.clear()
            self._condition.notify_all()
        self._thread.join(timeout)


class BackgroundWriter:
    """Run ``write(*args)`` for each :meth:`put` in a thread, in order, at most ``WRITE_BEHIND`` behind.

    Attributes:
        seconds: wall time spent in ``write``.

    An error in ``write`` stops the writer and is raised by the next :meth:`put` or by :meth:`close`.
    """

    def __init__(self, write: Callable[..., None]) -> None:
        self.seconds = 0.0
        self._write = write
        self._queue: collections.deque[tuple] = collections.deque()
        self._condition = threading.Condition()
        self._closing = False
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="posekit-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            with self._condition:
                while not self._queue and not self._closing:
                    self._condition.wait()
                if not self._queue:
                    return
                args = self._queue[0]
            try:
                began = time.perf_counter()
                self._write(*args)
                self.seconds += time.perf_counter() - began
            except BaseException as error:  # raised in the tracking thread by put() or close()
                with self._condition:
                    self._error = error
                    self._queue.clear()
                    self._condition.notify_all()
                return
            with self._condition:
                self._queue.popleft()
                self._condition.notify_all()

    def put(self, *args: object) -> None:
        """Queue one call of ``write``; waits while ``WRITE_BEHIND`` calls are queued."""
        with self._condition:
            while len(self._queue) >= WRITE_BEHIND and self._error is None:
                self._condition.wait()
            self._raise()
            self._queue.append(args)
            self._condition.notify_all()

    def close(self) -> None:
        """Wait for the queued calls to be written; raise the writer's error, if any."""
        with self._condition:
            self._closing = True
            self._condition.notify_all()
        self._thread.join()
        self._raise()

    def _raise(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error


_END = object()
