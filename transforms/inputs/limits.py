"""Per-file limits: a time limit and a cap on the header bytes read.

One file must never cost the run. Two limits bound what reading one file may take:

* ``header_bytes``: the bytes read from one file (seeks past values are free). The
  stream a reader gets (``LimitedStream``) refuses a read that would go past it and
  raises ``HeaderTooLarge``; it also never asks the underlying file for more than
  the file holds, so a small file declaring a 4 GB value makes no 4 GB buffer. Memory
  and bucket downloads per file stay bounded by the cap.
* ``seconds``: wall-clock time for one file, enforced twice:

  1. every read through ``LimitedStream`` checks the deadline, which stops a parse
     that keeps reading (a slow disk or bucket, a header of millions of elements);
  2. a watchdog thread (one per process) raises ``FileTimeout`` inside the worker
     thread once its deadline has passed, with CPython's
     ``PyThreadState_SetAsyncExc``: that stops work that no longer reads (walking a
     huge parsed sequence, formatting values). DoFns run in worker threads, where
     ``signal.alarm`` is not available, and a thread cannot be killed; the async
     exception is the one way to interrupt Python code in another thread. It is
     delivered at the next bytecode, so a thread stuck inside one C call (a hung
     network file system read) is only interrupted once that call returns; the
     header cap bounds the C calls a file can cause.

  The exception is armed only while the guarded call runs; disarming clears an
  exception that was raised but not yet delivered, under the same lock, so it never
  lands in the next file or in Beam's own code: after a timeout the worker goes on.
"""

from __future__ import annotations

import ctypes
import io
import threading
import time
import zlib
from dataclasses import dataclass

from transforms.common.streams import ReadOnlyStream


class FileLimitExceeded(BaseException):
    """A per-file limit was hit. A BaseException, like KeyboardInterrupt, so that the
    ``except Exception`` of a reader (pydicom's, or the flattener's per-element one)
    cannot swallow it: it ends the file's read wherever it is raised."""


class FileTimeout(FileLimitExceeded):
    """Reading one file took longer than the per-file time limit."""


class HeaderTooLarge(FileLimitExceeded):
    """One file's header needs more bytes than the per-file read cap."""


@dataclass(frozen=True)
class FileLimits:
    seconds: float = 60.0  # 0 = no limit
    header_bytes: int = 64 << 20  # 0 = no limit


# ---------------------------------------------------------------------------
# The stream


class LimitedStream(ReadOnlyStream):
    """A read-only, seekable view of ``raw`` that enforces ``FileLimits``.

    ``size``: the file's size as matched (None if unknown). ``furthest`` is the
    furthest byte read and ``hit_end`` whether a read reached the end of the file:
    error messages say where a file broke with them."""

    def __init__(self, raw, size: int | None, limits: FileLimits, deadline: float | None):
        super().__init__(getattr(raw, "name", ""))
        self.raw = raw
        self.size = size
        self.cap = limits.header_bytes
        self.seconds = limits.seconds
        self.deadline = deadline
        self.read_bytes = 0
        self.furthest = 0
        self.hit_end = False
        self.position = raw.tell()

    def seek(self, offset, whence=io.SEEK_SET):
        self.position = self.raw.seek(offset, whence)
        return self.position

    def read(self, size=-1):
        if size is None or size < 0:
            return self.readall()
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise FileTimeout(self.seconds)
        position = self.position
        wanted = size
        if self.size is not None:
            wanted = max(0, min(wanted, self.size - position))
        if self.cap and self.read_bytes + wanted > self.cap:
            raise HeaderTooLarge(self.cap)
        data = self.raw.read(wanted) if wanted else b""
        count = len(data)
        self.position = position + count
        self.read_bytes += count
        if self.position > self.furthest:
            self.furthest = self.position
        if count < size:
            self.hit_end = True
        return data

    def readinto(self, buffer) -> int:
        data = self.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)

    def close(self):
        try:
            self.raw.close()
        finally:
            super().close()


DEFLATED_TRANSFER_SYNTAX = b"1.2.840.10008.1.2.1.99"


def check_inflated_size(stream: LimitedStream) -> None:
    """Raise ``HeaderTooLarge`` if a deflated data set inflates past the byte cap.

    A reader inflates a deflated file's whole data set in one call, which no stream
    can bound (a small file can inflate to gigabytes). So a Part 10 file whose File
    Meta names the deflated transfer syntax is inflated once here, in bounded steps,
    before the reader sees it; the reads of this trial do not count against the cap.
    Anything unusual (no group length, data that does not inflate) is left to the
    reader, which reports it as usual."""
    cap = stream.cap
    if not cap:
        return
    stream.seek(132)
    head = stream.read(12)
    if head[:6] != b"\x02\x00\x00\x00UL" or len(head) < 12:
        stream.seek(0)
        return
    meta_end = 144 + int.from_bytes(head[8:12], "little")
    meta = stream.read(min(meta_end - 144, 1 << 16))
    counted = stream.read_bytes
    try:
        if DEFLATED_TRANSFER_SYNTAX not in meta:
            return
        stream.seek(meta_end)
        inflater = zlib.decompressobj(-zlib.MAX_WBITS)
        total = 0
        while True:
            chunk = stream.read(1 << 20)
            if not chunk:
                return
            stream.read_bytes = counted  # the trial is free
            while chunk:
                total += len(inflater.decompress(chunk, cap + 1 - total))
                if total > cap:
                    raise HeaderTooLarge(cap)
                chunk = inflater.unconsumed_tail
    except zlib.error:
        return
    finally:
        stream.read_bytes = counted
        stream.seek(0)


# ---------------------------------------------------------------------------
# The watchdog

_set_async_exc = ctypes.pythonapi.PyThreadState_SetAsyncExc
_set_async_exc.argtypes = (ctypes.c_ulong, ctypes.py_object)
_set_async_exc.restype = ctypes.c_int


class _Armed:
    __slots__ = ("thread_id", "deadline", "fired", "active")

    def __init__(self, thread_id: int, deadline: float):
        self.thread_id = thread_id
        self.deadline = deadline
        self.fired = False
        self.active = True


class Watchdog:
    """One thread per process that interrupts guarded calls past their deadline."""

    _instance = None
    _instance_lock = threading.Lock()

    def __init__(self):
        self.lock = threading.Condition()
        self.armed: set = set()
        self.fired = 0
        self.wake_at = float("inf")  # when the thread next looks, unless notified
        thread = threading.Thread(target=self._watch, name="dicom-file-watchdog", daemon=True)
        thread.start()

    @classmethod
    def get(cls) -> "Watchdog":
        with cls._instance_lock:
            if cls._instance is None:
                cls._instance = cls()
            return cls._instance

    def arm(self, seconds: float) -> _Armed:
        entry = _Armed(threading.get_ident(), time.monotonic() + seconds)
        with self.lock:
            self.armed.add(entry)
            if entry.deadline < self.wake_at:  # rarely: waking the thread costs a switch
                self.lock.notify()
        return entry

    def disarm(self, entry: _Armed) -> None:
        with self.lock:
            if entry.active:
                entry.active = False
                self.armed.discard(entry)
                if entry.fired:
                    # Raised but maybe not delivered yet: clear it (NULL clears).
                    _set_async_exc(entry.thread_id, ctypes.py_object())

    def _watch(self) -> None:
        with self.lock:
            while True:
                now = time.monotonic()
                due = [entry for entry in self.armed if entry.deadline <= now]
                for entry in due:
                    entry.fired = True
                    self.armed.discard(entry)
                    self.fired += 1
                    _set_async_exc(entry.thread_id, ctypes.py_object(FileTimeout))
                self.wake_at = min((entry.deadline for entry in self.armed), default=float("inf"))
                self.lock.wait(timeout=None if self.wake_at == float("inf") else
                               max(0.0, self.wake_at - now))


class FileGuard:
    """Runs one file's read under ``FileLimits`` and hands out its limited stream."""

    def __init__(self, limits: FileLimits):
        self.limits = limits
        self._local = threading.local()

    def run(self, function, *args):
        """``function(*args)``; raises ``FileTimeout`` once the time limit is past."""
        seconds = self.limits.seconds
        if not seconds:
            self._local.deadline = None
            return function(*args)
        self._local.deadline = time.monotonic() + seconds
        watchdog = Watchdog.get()
        entry = None
        try:
            entry = watchdog.arm(seconds)
            try:
                return function(*args)
            finally:
                watchdog.disarm(entry)
        except FileTimeout as exc:
            if entry is not None:
                watchdog.disarm(entry)  # when delivered inside the first disarm
            raise FileTimeout(seconds) from exc.__cause__
        finally:
            self._local.deadline = None

    def stream(self, raw, size: int | None) -> LimitedStream:
        """``raw`` (a binary file object) behind this file's limits."""
        return LimitedStream(raw, size, self.limits, getattr(self._local, "deadline", None))
