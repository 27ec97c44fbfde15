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

Beam's import also warns ``crcmod package not found`` when its tfrecord extra is missing;
that one is prevented by depending on ``apache-beam[tfrecord]`` (``setup.py``), not hidden.
"""

from __future__ import annotations

import logging
import os
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


def quiet_dependencies(verbose: bool = False) -> None:
    """Filter the dependencies' notices in this process and the workers it starts;
    ``verbose``: show Beam's INFO lines instead."""
    if verbose:
        logging.basicConfig(level=logging.INFO)
        return
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
