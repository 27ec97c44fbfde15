"""How a local run ends when it cannot finish: Ctrl-C, SIGTERM, a full disk.

* SIGINT and SIGTERM end this process's children (the runner's SDK workers, by pid) and
  raise ``Stopped`` in the launcher's thread (SIGTERM would otherwise end the process at
  once, lock held); the runner unwinds, the lock is released. What its threads then
  log about the streams they lost is not shown: the launcher says the stop in one line.
* Whatever ends the run early, ``discard_attempt`` deletes its temp dir (``.scan.tmp-<run>``)
  and the ``*.partial`` files of its generation. The generation's finished shards stay:
  the next run resumes them (``transforms/output/__init__.py``), and its cleanup deletes
  what it does not need; after a full disk the whole generation goes, to give the space
  back. Nothing of the committed outputs or ``CURRENT`` changes: they
  are replaced only at the commit, the pipeline's last steps.
* The exit status: 128 + the signal's number (130, 143), as shells report a process a
  signal ended; a full disk is one line naming the file and exit status 1.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import signal
import threading

CHILD_GRACE_SECONDS = 3.0
# Loggers of the runner whose records, once a stop has ended its workers, only report
# that: its data and control planes lose their streams ("Failed to read inputs in the
# data plane", a grpc.RpcError traceback) at a moment that depends on the scheduler.
RUNNER_LOGGERS = "apache_beam.runners"
_STOP_BEGAN = threading.Event()
_NO_SPACE = re.compile(r"No space left on device(?:: '([^']*)')?")


class Stopped(BaseException):
    """A signal asked the run to stop (a BaseException, like KeyboardInterrupt, so that
    no ``except Exception`` on the way swallows it)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_status(self) -> int:
        return 128 + self.signum


def stopped_in(exc: BaseException):
    """The ``Stopped`` behind ``exc``: Beam wraps an exception raised while it runs a
    bundle in this thread (``RuntimeError: ...Stopped: SIGINT [while running ...]``)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, Stopped):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


@contextlib.contextmanager
def stop_on_signals():
    """SIGINT and SIGTERM raise ``Stopped`` while the block runs (main thread only:
    Python delivers signals there; elsewhere the block runs unchanged)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _STOP_BEGAN.clear()

    def _raise(signum, _frame):
        # The runner, unwinding, waits for its SDK worker processes to exit, and they
        # wait for it (Beam 2.70's SubprocessSdkWorkerHandler.stop_worker joins with no
        # timeout): they are ended first. Their reader threads' errors and the runner's
        # records of its lost streams then say nothing new.
        threading.excepthook = _quiet_after_stop
        quiet_runner_after_stop()
        end_children()
        raise Stopped(signum)

    previous = {signum: signal.signal(signum, _raise) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _quiet_after_stop(args) -> None:
    """Threads of the runner that fail because its workers were ended: not reported."""
    del args


class AfterStop(logging.Filter):
    """Drops the runner's records once a stop has begun (``_STOP_BEGAN``, cleared when
    the next run starts). A handler's filter, because records of the runner's many
    loggers reach the handlers by propagation, where a logger's own filter never runs."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (_STOP_BEGAN.is_set() and (
            record.name == RUNNER_LOGGERS or record.name.startswith(RUNNER_LOGGERS + ".")))


_AFTER_STOP = AfterStop()


def quiet_runner_after_stop() -> None:
    """From now until the next run starts, the runner's records are not shown (on every
    handler of the root logger, and on the one logging falls back to without any)."""
    _STOP_BEGAN.set()
    for handler in [*logging.getLogger().handlers, logging.lastResort]:
        if handler is not None:
            handler.addFilter(_AFTER_STOP)  # the same filter once: addFilter skips repeats


def end_children(grace: float = CHILD_GRACE_SECONDS) -> None:
    """SIGTERM, then SIGKILL after ``grace`` seconds, every process this one started
    (the runner's SDK workers and theirs) that is still running."""
    import psutil  # pylint: disable=import-outside-toplevel

    children = psutil.Process(os.getpid()).children(recursive=True)
    for child in children:
        with contextlib.suppress(psutil.Error):
            child.terminate()
    _, alive = psutil.wait_procs(children, timeout=grace)
    for child in alive:
        with contextlib.suppress(psutil.Error):
            child.kill()
    psutil.wait_procs(alive, timeout=grace)


def disk_full(exc: BaseException) -> str | None:
    """The path a full disk refused, '' if unknown, None if ``exc`` is no full disk.
    The runner re-raises a worker's error as text, so its message is searched too."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
            return exc.filename or ""
        found = _NO_SPACE.search(str(exc))
        if found:
            return found.group(1) or ""
        exc = exc.__cause__ or exc.__context__
    return None


class QuietEndings(logging.Filter):
    """Drops the runner's ERROR record (a whole traceback) of a full disk or a stop: the
    launcher says each in one line. Any other error is logged as before."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if error is not None and (stopped_in(error) or disk_full(error) is not None):
            return False
        return _NO_SPACE.search(record.getMessage()) is None


@contextlib.contextmanager
def quiet_endings(logger_name: str = "apache_beam.runners.common"):
    logger = logging.getLogger(logger_name)
    quiet = QuietEndings()
    logger.addFilter(quiet)
    try:
        yield
    finally:
        logger.removeFilter(quiet)


def discard_attempt(temp_dir: str, state_dir: str, run_id: str,
                    keep_generation: bool = True) -> None:
    """Delete this run's temp dir and its generation's ``*.partial`` files, or the whole
    generation (``keep_generation=False``: a full disk wants its space back more than a
    resume). Local outputs only: on buckets a killed write leaves no object, and the
    next run's cleanup deletes the rest."""
    import shutil  # pylint: disable=import-outside-toplevel

    if "://" in temp_dir:
        return
    shutil.rmtree(temp_dir, ignore_errors=True)
    generation = os.path.join(state_dir, f"gen-{run_id}")
    if not keep_generation:
        shutil.rmtree(generation, ignore_errors=True)
        return
    for folder, _, names in os.walk(generation):
        for name in names:
            if name.endswith(".partial"):
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(folder, name))
