"""Progress for local runs: workers send counts to the launching process over UDP.

Beam's metrics are only readable once a local run is over, and local workers may be
separate processes, so each worker sends small ``matched``/``done`` datagrams to a
socket on 127.0.0.1 that the CLI reads to draw its bar. Losing a datagram only makes
the bar lag; nothing depends on it.
"""

from __future__ import annotations

import socket
import threading
import time

FLUSH_SECONDS = 0.25


class ProgressReporter:
    """Worker side: counts, sent at most every ``FLUSH_SECONDS``. Picklable."""

    def __init__(self, address: tuple[str, int]):
        self.address = address
        self._socket = None
        self._pending = {"matched": 0, "done": 0}
        self._last_sent = 0.0

    def __getstate__(self):
        return {"address": self.address}

    def __setstate__(self, state):
        self.__init__(state["address"])

    def connect(self) -> None:
        if self._socket is None:
            self._socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)

    def matched(self, count: int) -> None:
        self._add("matched", count)

    def done(self, count: int) -> None:
        self._add("done", count)

    def _add(self, kind: str, count: int) -> None:
        self._pending[kind] += count
        if time.monotonic() - self._last_sent >= FLUSH_SECONDS:
            self.flush()

    def flush(self) -> None:
        self._last_sent = time.monotonic()
        message = f"{self._pending['matched']} {self._pending['done']}".encode()
        if message == b"0 0" or self._socket is None:
            return
        self._pending = {"matched": 0, "done": 0}
        try:
            self._socket.sendto(message, self.address)
        except OSError:
            pass


class ProgressBar:
    """CLI side: receives the counts and shows files done / matched, rate and ETA."""

    def __init__(self, enabled: bool = True, stream=None):
        self._stream = stream  # None: tqdm's own, stderr
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._socket.bind(("127.0.0.1", 0))
        self._socket.settimeout(0.2)
        self.address = self._socket.getsockname()
        self.enabled = enabled
        self.matched = 0
        self.done = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="progress", daemon=True)
        self._bar = None

    def reporter(self) -> ProgressReporter:
        return ProgressReporter(self.address)

    def __enter__(self):
        if self.enabled:
            from tqdm import tqdm

            self._bar = tqdm(total=0, unit="file", desc="DICOM files", dynamic_ncols=True,
                             file=self._stream)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self._socket.close()
        if self._bar is not None:
            self._bar.close()

    def _run(self):
        while not self._stop.is_set():
            try:
                data = self._socket.recv(64)
            except (socket.timeout, OSError):
                continue
            matched, done = (int(part) for part in data.split())
            self.matched += matched
            self.done += done
            if self._bar is not None:
                self._bar.total = self.matched
                self._bar.update(done)
