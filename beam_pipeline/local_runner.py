"""The local runner: in-process or SDK worker processes, chosen by the archive's size,
and the options and log levels its workers get."""

from __future__ import annotations

import argparse
import glob
import itertools
import os

from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from beam_pipeline.options import DicomExtractOptions
from beam_pipeline.quiet import worker_log_levels
from transforms.common.beam_internals import add_option_arguments
from transforms.inputs.match import has_glob

LOCAL_RUNNERS = (None, "DirectRunner", "FnApiRunner")
# Local runs: one SDK worker process per core beats the in-process runner from about
# 15,000 files on, on 2 cores (benchmarks/README.md, same-run pairs in seconds,
# in-process / workers: 10,000 files 11.3 / 13.1, 20,000 files 19.1 / 16.8, 50,000
# 30.9 / 26.4); below that the workers' start-up (~3.5 s more than one process) costs
# more than the second core saves. With one core, workers only add that start-up.
MULTI_PROCESS = {"direct_running_mode": "multi_processing", "direct_num_workers": 0}
IN_PROCESS = {"direct_running_mode": "in_memory", "direct_num_workers": 1}
MULTI_PROCESS_FROM_FILES = 15000


def local_files_at_least(inputs: list[str], count: int) -> bool:
    """Whether the local inputs hold ``count`` files (counting stops there). Bucket
    inputs count as many: their reads wait on the network, where workers help."""
    seen = 0
    for path in inputs:
        if "://" in path:
            return True
        if has_glob(path):
            found = glob.iglob(path, recursive=True)
        elif os.path.isdir(path):
            found = (name for _, _, names in os.walk(path) for name in names)
        else:
            found = iter([path])
        seen += sum(1 for _ in itertools.islice(found, count - seen))
        if seen >= count:
            return True
    return False


def local_default_flags(parser, flags: list[str], inputs: list[str]) -> list[str]:
    """The measured local default, for a local run whose user set no ``direct_*`` option."""
    given = parser.parse_known_args(flags)[0]
    if given.runner not in LOCAL_RUNNERS:
        return []
    user_keys = {
        parser._option_string_actions[flag.split("=", 1)[0]].dest  # pylint: disable=protected-access
        for flag in flags
        if flag.split("=", 1)[0] in parser._option_string_actions  # pylint: disable=protected-access
    }
    if user_keys & MULTI_PROCESS.keys():
        return []
    large = (os.cpu_count() or 1) > 1 and local_files_at_least(inputs, MULTI_PROCESS_FROM_FILES)
    return [f"--{key}={value}" for key, value in (MULTI_PROCESS if large else IN_PROCESS).items()]


def worker_options(options: PipelineOptions, verbose: bool = False) -> dict:
    """The options handed to local SDK workers.

    Workers parse them with Beam's option classes only, so ours (which reach the DoFns
    pickled, not as options) and default-true flags such as ``pipeline_type_check``
    (re-encoded as flags the worker's parser lacks) would be logged as "Discarding
    unparseable args": only Beam's non-default options are passed, with the quiet log
    levels of ``beam_pipeline/quiet.py`` unless ``verbose``.
    """
    ours = argparse.ArgumentParser(add_help=False)
    add_option_arguments(DicomExtractOptions, ours)
    own_keys = {action.dest for action in ours._actions}  # pylint: disable=protected-access
    passed = {
        key: value
        for key, value in options.get_all_options(drop_default=True).items()
        if key not in own_keys
    }
    return worker_log_levels(passed, verbose)


def make_runner(options: PipelineOptions, verbose: bool = False):
    """The local runner is chosen explicitly: Beam's DirectRunner may switch to Prism
    and try to download it, so an offline machine would behave differently."""
    runner = options.view_as(StandardOptions).runner
    if runner not in LOCAL_RUNNERS:
        return None  # Beam resolves the named runner
    from apache_beam.portability.api import beam_provision_api_pb2
    from apache_beam.runners.portability.fn_api_runner import fn_runner
    from apache_beam.runners.portability.portable_runner import JobServiceHandle

    encoded = JobServiceHandle.encode_pipeline_options(worker_options(options, verbose))
    provision_info = fn_runner.ExtendedProvisionInfo(
        beam_provision_api_pb2.ProvisionInfo(pipeline_options=encoded)
    )
    return fn_runner.FnApiRunner(provision_info=provision_info)


def is_local(options: PipelineOptions) -> bool:
    return options.view_as(StandardOptions).runner in LOCAL_RUNNERS


