"""Python's cyclic garbage collector on a worker.

What the process holds before its
first file (Beam, pydicom's dictionaries, the project's modules and settings: hundreds
of thousands of objects, none of them garbage) is moved out of the collector's reach
once, with ``gc.freeze``, so that its full collections walk only what the work keeps.
On the 50,000-file benchmark archive that is about 0.8 CPU s of 31 and 0.8 s of wall
time (``benchmarks/README.md``).

The readers call :func:`freeze_startup_objects` in ``setup``; the first call in a process
collects and freezes, later ones do nothing (what they would freeze is the data of work
in flight, which must stay collectable). Frozen objects are still freed by their
reference counts; only a cycle among them would outlive the process's need of it.

:func:`collection_paused` turns the collector off while a step builds many small objects
that all stay alive until it is done (one file's DICOM JSON, the nested rows of a chunk,
the series rows): none of them is garbage yet, and each pass would walk them again
(for an RT Structure Set's JSON, hundreds of thousands of dicts and lists, a third of
the file's CPU).
"""

from __future__ import annotations

import contextlib
import gc
import threading

_lock = threading.Lock()
_frozen = False


def freeze_startup_objects() -> None:
    """Once per process: collect, then freeze every object the collector tracks."""
    global _frozen  # pylint: disable=global-statement
    with _lock:
        if _frozen:
            return
        _frozen = True
        gc.collect()
        gc.freeze()


@contextlib.contextmanager
def collection_paused():
    """No cyclic collection meanwhile; it resumes, with anything cyclic left behind, right
    after (unless it was off already)."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
