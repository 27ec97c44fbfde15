"""What Beam and its dependencies print that nobody asked for: silenced by the CLI's
``main`` before Beam is imported, brought back by ``--verbose``.

Nothing happens at import; :func:`quiet_dependencies` is the one call, made once per
process by ``beam_pipeline.cli.main`` (idempotent, so tests may call ``main`` often).

* google-api-core / google-auth (the gcp extra) warn with FutureWarnings, on import, that
  the grpcio Beam 2.70 pins (<1.66) will not be supported from 2027: nothing about this run.
  The local runner's SDK worker processes import Beam before any code of ours runs, so
  they get the same filter through ``PYTHONWARNINGS`` (which takes exact module names).
* The SDK workers' own start-up lines (INFO, and "No semi_persistent_directory found"):
  :func:`worker_log_levels` gives the levels passed to them through Beam's public
  ``default_sdk_harness_log_level`` / ``sdk_harness_log_level_overrides`` options.
* On Flink and Prism the LOOPBACK SDK worker runs in this process. When the runner tears
  its environment down after a wave of stages, the worker's data-plane reader logs
  "Failed to read inputs in the data plane." with a gRPC ``CANCELLED`` traceback
  ("Multiplexer hanging up") although nothing failed: Beam's known spurious shutdown
  errors (apache/beam#20149), and its reader thread raises the same error again; so
  does the state channel's reader ("Received RST_STREAM with error code 8", also
  ``CANCELLED``). :class:`RunnerHangUps` and :func:`quiet_thread_hang_ups` drop exactly
  those.

Beam's import also warns ``crcmod package not found`` when its tfrecord extra is missing;
that one is prevented by depending on ``apache-beam[tfrecord]`` (``setup.py``), not hidden.
"""

from __future__ import annotations

import logging
import os
import threading
import warnings

GOOGLE_FUTURE_WARNINGS = r"google(\..*)?"
# PYTHONWARNINGS entries for the same notices in worker processes: exact module names.
WORKER_WARNING_FILTERS = tuple(
    f"ignore::FutureWarning:{module}"
    for module in ("google.api_core._python_package_support", "google.auth.transport.grpc")
)
# SDK worker levels: warnings and errors still show. The worker runs its start-up module
# (sdk_worker_main) as __main__, whose notes are irrelevant without staged files.
WORKER_DEFAULT_LEVEL = "WARNING"
WORKER_MODULE_LEVELS = {"__main__": "ERROR", "apache_beam.runners.worker.sdk_worker_main": "ERROR"}


# The LOOPBACK worker's data plane: its logger and the record of a failed read.
DATA_PLANE_LOGGER = "apache_beam.runners.worker.data_plane"
DATA_PLANE_FAILURE = "Failed to read inputs in the data plane."
# The worker's threads that read a stream from the runner and raise its end again: the
# data plane's inputs (data_plane.py) and the state channel's answers (sdk_worker.py).
STREAM_READER_THREADS = ("read_grpc_client_inputs", "read_state")


def runner_hung_up(error: BaseException | None) -> bool:
    """Whether ``error`` is the runner cancelling a gRPC stream (``CANCELLED``): a
    hang-up, not a failure. Any other status (a connection lost, a deadline) is not."""
    import grpc  # pylint: disable=import-outside-toplevel  # Beam's own dependency

    code = getattr(error, "code", None)
    return isinstance(error, grpc.RpcError) and callable(code) and \
        code() == grpc.StatusCode.CANCELLED


class RunnerHangUps(logging.Filter):
    """Drops the data plane's "Failed to read inputs" record of a runner's hang-up."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        return not (record.getMessage() == DATA_PLANE_FAILURE and runner_hung_up(error))


def quiet_thread_hang_ups(previous):
    """``threading.excepthook`` that drops a stream reader thread's re-raise of a
    runner's hang-up and passes anything else to ``previous``."""

    def hook(args):
        thread = getattr(args.thread, "name", None)
        if thread in STREAM_READER_THREADS and runner_hung_up(args.exc_value):
            return
        previous(args)

    hook.quiet_hang_ups = True
    return hook


def quiet_dependencies(verbose: bool = False) -> None:
    """Filter the dependencies' notices in this process and the workers it starts;
    ``verbose``: show Beam's INFO lines instead."""
    if verbose:
        logging.basicConfig(level=logging.INFO)
        return
    data_plane = logging.getLogger(DATA_PLANE_LOGGER)
    if not any(isinstance(entry, RunnerHangUps) for entry in data_plane.filters):
        data_plane.addFilter(RunnerHangUps())
    if not getattr(threading.excepthook, "quiet_hang_ups", False):
        threading.excepthook = quiet_thread_hang_ups(threading.excepthook)
    warnings.filterwarnings("ignore", category=FutureWarning, module=GOOGLE_FUTURE_WARNINGS)
    inherited = [entry for entry in os.environ.get("PYTHONWARNINGS", "").split(",") if entry]
    os.environ["PYTHONWARNINGS"] = ",".join(
        inherited + [entry for entry in WORKER_WARNING_FILTERS if entry not in inherited])


def worker_log_levels(passed: dict, verbose: bool = False) -> dict:
    """``passed`` (the options for SDK workers) with the quiet log levels, unless the
    user set them; ``verbose``: as given, so the workers log as Beam does by default."""
    if verbose:
        return passed
    levels = dict(passed)
    levels.setdefault("default_sdk_harness_log_level", WORKER_DEFAULT_LEVEL)
    overrides = dict(levels.get("sdk_harness_log_level_overrides") or {})
    for module, level in WORKER_MODULE_LEVELS.items():
        overrides.setdefault(module, level)
    levels["sdk_harness_log_level_overrides"] = overrides
    return levels
