"""``dicom-meta-extract INPUT... -o OUT.csv [options] [any Beam option]``.

Everything a user can get wrong on the command line (an unknown option, a missing
input, an output folder that cannot be written) is reported in one line with exit
status 2 before any work starts.
"""

from __future__ import annotations

import argparse
import glob
import itertools
import json
import os
import sys
import time
import uuid

import apache_beam as beam
import yaml
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import (
    PipelineOptions,
    StandardOptions,
    _BeamArgumentParser,
)

from beam_pipeline.options import DicomExtractOptions
from beam_pipeline.pipeline import ExtractDicomMetadata, plan_run

from beam_pipeline.short_help import format_help
from transforms.content.settings import ContentOptionError, ContentSettings, warn_random_key
from transforms.inputs.match import has_glob
from beam_pipeline.lock import OutputLock, OutputLocked, lock_path_for
from beam_pipeline.progress import ProgressBar
from beam_pipeline.stopping import (
    Stopped, discard_attempt, disk_full, end_children, quiet_disk_full, stop_on_signals,
)
from transforms.output.state import state_dir_for
from transforms.report.summary import OutputPaths
from transforms.inputs.checks import check_input, check_local_output_folder, check_output
from transforms.inputs import storage
from transforms.inputs.storage import StorageError, is_bucket

PROG = "dicom-meta-extract"
LOCAL_RUNNERS = (None, "DirectRunner", "FnApiRunner")
CLI_ONLY_OPTIONS = ("--config", "--quiet")
# Local runs: one SDK worker process per core beats the in-process runner from about
# 15,000 files on, on 2 cores (benchmarks/README.md, same-run pairs in seconds,
# in-process / workers: 10,000 files 11.3 / 13.1, 20,000 files 19.1 / 16.8, 50,000
# 30.9 / 26.4); below that the workers' start-up (~3.5 s more than one process) costs
# more than the second core saves. With one core, workers only add that start-up.
MULTI_PROCESS = {"direct_running_mode": "multi_processing", "direct_num_workers": 0}
IN_PROCESS = {"direct_running_mode": "in_memory", "direct_num_workers": 1}
MULTI_PROCESS_FROM_FILES = 15000


class UsageError(Exception):
    pass


class _OneLineParser(_BeamArgumentParser):
    def error(self, message):
        raise UsageError(message)


USAGE = f"{PROG} INPUT... -o OUT.csv [options] [Beam pipeline options]"
DESCRIPTION = (
    "Turn DICOM archives into one table: a row per file, a column per header element; "
    "next to it OUT.errors.csv, OUT.skipped.csv, OUT.summary.json and OUT.report.html."
)


class _Help(argparse.Action):
    """-h/--help: our options (beam_pipeline/short_help.py); --help-beam: every option."""

    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS,
                         nargs=0, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        if option_string in ("--help-beam", "--help_beam"):
            parser.print_help()
        else:
            cli_group = [("Input and run", parser.cli_actions)]
            sys.stdout.write(format_help(PROG, USAGE, DESCRIPTION, cli_group))
        parser.exit()


def _parser() -> _OneLineParser:
    parser = _OneLineParser(
        prog=PROG, allow_abbrev=False, add_help=False, usage=USAGE,
        description=DESCRIPTION + " Every option below --help-beam is Beam's.",
    )
    parser.add_argument("inputs", nargs="*", metavar="INPUT",
                        help="Directories, files or globs (local, gs://, s3://).")
    parser.add_argument("--config", metavar="FILE", help="YAML file of options "
                        "(run_configs/*.yaml); command-line flags override it.")
    parser.add_argument("--quiet", action="store_true", help="No progress bar or summary.")
    parser.add_argument("-h", "--help", action=_Help, help="Show this help and exit.")
    parser.add_argument("--help-beam", "--help_beam", action=_Help,
                        help="Show every option, Beam's pipeline options included, and exit.")
    parser.cli_actions = list(parser._actions)  # pylint: disable=protected-access
    option_classes = {str(cls): cls for cls in PipelineOptions.__subclasses__()}
    for cls in option_classes.values():
        cls._add_argparse_args(parser)
    return parser


def config_flags(path: str | None) -> list[str]:
    """``key: value`` pairs of a YAML file as ``--key=value`` flags."""
    if path is None:
        return []
    try:
        with open(path, encoding="utf-8") as stream:
            config = yaml.safe_load(stream) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise UsageError(f"cannot read config {path}: {exc}") from exc
    if not isinstance(config, dict):
        raise UsageError(f"config {path} must be a mapping of option: value")
    flags = []
    for key, value in config.items():
        values = value if isinstance(value, list) else [value]
        for item in values:
            if item is True:
                flags.append(f"--{key}")
            elif item is not False and item is not None:
                flags.append(f"--{key}={item}")
    return flags


def split_positionals(parser, argv: list[str]) -> tuple[list[str], list[str]]:
    """(positional arguments, pipeline option flags) of ``argv``, in their order.

    The CLI's own ``--config`` and ``--quiet`` (with their values) are left out."""
    positionals, flags = [], []
    tokens = iter(argv)
    for token in tokens:
        if token == "--":
            positionals.extend(tokens)
        elif token.startswith("-") and token != "-":
            option = [token]
            action = parser._option_string_actions.get(token)  # "--flag value" form
            if action is not None and action.nargs != 0 and "=" not in token:
                option.append(next(tokens, ""))
            if token.split("=", 1)[0] not in CLI_ONLY_OPTIONS:
                flags.extend(option)
        else:
            positionals.append(token)
    return positionals, flags


def _check_inputs(inputs: list[str], options=None) -> list[str]:
    """The inputs as they will be matched; bucket inputs are listed once (limit 1)."""
    if not inputs:
        raise UsageError("no INPUT given: name at least one directory, file or glob")
    checked = []
    for path in inputs:
        checked.append(path)
        if is_bucket(path):
            try:
                checked[-1] = check_input(path, options)
            except StorageError as exc:
                raise UsageError(str(exc)) from exc
            continue
        if "://" in path:
            continue
        if has_glob(path):
            if next(glob.iglob(path, recursive=True), None) is None:
                raise UsageError(f"input {path!r} matches no file")
        elif not os.path.exists(path):
            raise UsageError(f"input {path!r} does not exist")
    return checked


def _check_output(output: str | None, options=None) -> None:
    if not output:
        raise UsageError("no output given: add -o OUT.csv")
    if is_bucket(output):
        try:
            check_output(output, options)
        except StorageError as exc:
            raise UsageError(str(exc)) from exc
        return
    if "://" in output:
        return
    if os.path.isdir(output):
        raise UsageError(f"output {output!r} is a directory; name a file such as {output}/scan.csv")
    folder = os.path.dirname(os.path.abspath(output))
    if not os.path.isdir(folder):
        raise UsageError(f"output folder {folder!r} does not exist")
    try:  # issue 24: a real file, not permission bits (read-only mounts, /proc, root)
        check_local_output_folder(folder)
    except StorageError as exc:
        raise UsageError(str(exc)) from exc


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


def parse(argv: list[str]):
    """Return (inputs, pipeline options, quiet) or raise UsageError."""
    parser = _parser()
    config = argparse.ArgumentParser(add_help=False)
    config.add_argument("--config")
    config_path = config.parse_known_args(argv)[0].config
    argv = config_flags(config_path) + argv
    args = parser.parse_intermixed_args(argv)
    positionals, flags = split_positionals(parser, argv)
    options = PipelineOptions(flags)
    FileSystems.set_options(options)  # bucket checks need the S3 / GCS options
    storage.prepare_filesystems(options)
    inputs = _check_inputs(positionals, options)
    options = PipelineOptions(flags + local_default_flags(parser, flags, inputs))
    FileSystems.set_options(options)
    _check_output(options.view_as(DicomExtractOptions).output, options)
    _check_content(options.view_as(DicomExtractOptions))
    return inputs, options, args.quiet


def _check_content(extract_options) -> None:
    """Tag lists are checked as they are parsed; here what needs them all (and the key file)."""
    try:
        content = ContentSettings.from_options(extract_options, key=b"check only")
    except ContentOptionError as exc:
        raise UsageError(str(exc)) from exc
    warn_random_key(content, PROG)


def worker_options(options: PipelineOptions) -> dict:
    """The options handed to local SDK workers.

    Workers parse them with Beam's option classes only, so ours (which reach the DoFns
    pickled, not as options) and default-true flags such as ``pipeline_type_check``
    (re-encoded as flags the worker's parser lacks) would be logged as "Discarding
    unparseable args": only Beam's non-default options are passed. The worker's startup
    notes ("No semi_persistent_directory found", irrelevant without staged files) are
    silenced by level for that one module; its errors still show.
    """
    ours = argparse.ArgumentParser(add_help=False)
    DicomExtractOptions._add_argparse_args(ours)  # pylint: disable=protected-access
    own_keys = {action.dest for action in ours._actions}  # pylint: disable=protected-access
    passed = {
        key: value
        for key, value in options.get_all_options(drop_default=True).items()
        if key not in own_keys
    }
    overrides = dict(passed.get("sdk_harness_log_level_overrides") or {})
    # The worker runs that module as __main__, so its logger is named "__main__".
    for module in ("__main__", "apache_beam.runners.worker.sdk_worker_main"):
        overrides.setdefault(module, "ERROR")
    passed["sdk_harness_log_level_overrides"] = overrides
    return passed


def make_runner(options: PipelineOptions):
    """The local runner is chosen explicitly: Beam's DirectRunner may switch to Prism
    and try to download it, so an offline machine would behave differently."""
    runner = options.view_as(StandardOptions).runner
    if runner not in LOCAL_RUNNERS:
        return None  # Beam resolves the named runner
    from apache_beam.portability.api import beam_provision_api_pb2
    from apache_beam.runners.portability.fn_api_runner import fn_runner
    from apache_beam.runners.portability.portable_runner import JobServiceHandle

    encoded = JobServiceHandle.encode_pipeline_options(worker_options(options))
    provision_info = fn_runner.ExtendedProvisionInfo(
        beam_provision_api_pb2.ProvisionInfo(pipeline_options=encoded)
    )
    return fn_runner.FnApiRunner(provision_info=provision_info)


def is_local(options: PipelineOptions) -> bool:
    return options.view_as(StandardOptions).runner in LOCAL_RUNNERS


def run(inputs: list[str], options: PipelineOptions, quiet: bool = True) -> dict:
    """Run the extraction and return its summary."""
    extract_options = options.view_as(DicomExtractOptions)
    run_id = time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:8]
    paths = OutputPaths.for_output(
        extract_options.output, run_id, extract_options.format.split(",")
    )
    started = time.time()
    FileSystems.set_options(options)
    # Before any work: one run per output (raises OutputLocked naming the holder).
    lock = OutputLock(lock_path_for(paths.table), run_id, extract_options.wait_for_lock,
                      options)
    # issue 24: signals stop the run; an early end leaves no temp file (beam_pipeline/stopping.py).
    with lock, stop_on_signals(), quiet_disk_full():
        try:
            with ProgressBar(enabled=not quiet and is_local(options)) as bar:
                progress = bar.reporter() if is_local(options) else None
                run_plan = plan_run(inputs, extract_options, paths, started)
                pipeline = beam.Pipeline(runner=make_runner(options), options=options)
                _ = pipeline | "ExtractDicomMetadata" >> ExtractDicomMetadata(run_plan, progress)
                pipeline.run().wait_until_finish()
        except BaseException as exc:
            if is_local(options):
                end_children()
            discard_attempt(paths.temp_dir, state_dir_for(paths.table), run_id,
                            keep_generation=disk_full(exc) is None)
            raise
    with FileSystems.open(paths.summary) as stream:
        return json.loads(stream.read())


def describe(summary: dict) -> str:
    accounted = (
        "every matched file is accounted for"
        if summary["accounted_for"]
        else "WARNING: rows + errors + skipped do not add up to the files matched"
    )
    return (
        f"Matched {summary['files_matched']} files in {summary['seconds']:.1f} s: "
        f"{summary['rows']} rows with {summary['columns']} columns written to "
        f"{' and '.join(summary.get('outputs', [summary['table']]))}"
        f"{_unparseable(summary)}, {summary['errors']} errors (see {summary['errors_file']}), "
        f"{summary['non_dicom_skipped']} non-DICOM files skipped (see "
        f"{summary['skipped_file']}); {accounted}.{_report(summary)}"
    )


def _report(summary: dict) -> str:
    return f" Report: {summary['report_file']}" if summary.get("report_file") else ""


def _unparseable(summary: dict) -> str:
    count = summary.get("parquet_unparseable_values")
    if not count:
        return ""
    return f" ({count} values not of their column's type are null in Parquet, text in CSV)"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        inputs, options, quiet = parse(argv)
    except UsageError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    try:
        summary = run(inputs, options, quiet)
    except OutputLocked as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except Stopped as stopped:  # issue 24
        print(f"{PROG}: stopped by {stopped}; the previous outputs are unchanged",
              file=sys.stderr)
        return stopped.exit_status
    except Exception as exc:  # pylint: disable=broad-except
        full = disk_full(exc)  # issue 24
        if full is None:
            raise
        where = full or os.path.dirname(os.path.abspath(
            options.view_as(DicomExtractOptions).output))
        print(f"{PROG}: error: disk full (no space left on device) writing {where}; "
              "the previous outputs are unchanged", file=sys.stderr)
        return 1
    if not quiet:
        print(describe(summary), file=sys.stderr)
    return 0 if summary["accounted_for"] else 1
