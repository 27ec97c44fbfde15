"""The command line's arguments: parsed, checked, and turned into pipeline options.

Everything a user can get wrong on the command line (an unknown option, a missing
input, an output folder that cannot be written) raises :class:`UsageError`, which the
CLI reports in one line with exit status 2 before any work starts.
"""

from __future__ import annotations

import argparse
import glob
import os
import sys

import yaml
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from beam_pipeline.local_runner import local_default_flags
from beam_pipeline.options import DicomExtractOptions
from beam_pipeline.short_help import format_help
from transforms.common.beam_internals import BeamArgumentParser, add_option_arguments
from transforms.content.settings import ContentOptionError, ContentSettings, warn_random_key
from transforms.inputs import storage
from transforms.inputs.checks import (
    check_input, check_local_output_folder, check_output, check_scheme,
)
from transforms.inputs.dicomweb import DicomWebError, DicomWebSettings, check_source, is_dicomweb
from transforms.inputs.match import has_glob
from transforms.inputs.storage import StorageError, is_bucket
from transforms.output.nested_parts import folder_stem, foreign_files, is_folder_output

PROG = "dicom-meta-extract"
CLI_ONLY_OPTIONS = ("--config", "--quiet", "--verbose")


class UsageError(Exception):
    pass


def output_folder(options) -> str:
    """The folder the output goes to, as the user named it (or "the output folder")."""
    output = options.view_as(DicomExtractOptions).output if options is not None else None
    return os.path.dirname(os.path.abspath(output)) if output else "the output folder"


def error_line(exc: Exception) -> str:
    """The one line a usage error (or a locked output) is reported in."""
    return f"{PROG}: error: {exc}"


class _OneLineParser(BeamArgumentParser):
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
        out = parser.stdout or sys.stdout
        if option_string in ("--help-beam", "--help_beam"):
            parser.print_help(out)
        else:
            cli_group = [("Input and run", parser.cli_actions)]
            out.write(format_help(PROG, USAGE, DESCRIPTION, cli_group))
        parser.exit()


def _parser(stdout=None) -> _OneLineParser:
    parser = _OneLineParser(
        prog=PROG, allow_abbrev=False, add_help=False, usage=USAGE,
        description=DESCRIPTION + " Every option below --help-beam is Beam's.",
    )
    parser.add_argument("inputs", nargs="*", metavar="INPUT",
                        help="Directories, files or globs (local, gs://, s3://).")
    parser.add_argument("--config", metavar="FILE", help="YAML file of options "
                        "(run_configs/*.yaml); command-line flags override it.")
    parser.add_argument("--quiet", action="store_true", help="No progress bar or summary.")
    parser.add_argument("--verbose", action="store_true",
                        help="Also show Beam's and its workers' log lines and notices.")
    parser.add_argument("-h", "--help", action=_Help, help="Show this help and exit.")
    parser.add_argument("--help-beam", "--help_beam", action=_Help,
                        help="Show every option, Beam's pipeline options included, and exit.")
    parser.stdout = stdout  # where --help writes (None: sys.stdout)
    parser.cli_actions = list(parser._actions)  # pylint: disable=protected-access
    option_classes = {str(cls): cls for cls in PipelineOptions.__subclasses__()}
    for cls in option_classes.values():
        add_option_arguments(cls, parser)
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
        try:
            if is_dicomweb(path):  # credentials read, the server asked once
                check_source(path, DicomWebSettings.from_options(
                    (options or PipelineOptions([])).view_as(DicomExtractOptions)))
                continue
            check_scheme(path)  # a scheme nothing serves, or a malformed one
        except (DicomWebError, StorageError) as exc:
            raise UsageError(str(exc)) from exc
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
    if is_folder_output(output):
        _check_output_folder(output, options)
        output = folder_stem(output) + ".csv"  # the other outputs go beside the folder
    if is_bucket(output):
        try:
            check_output(output, options)
        except StorageError as exc:
            raise UsageError(str(exc)) from exc
        return
    if "://" in output:
        return
    folder = os.path.dirname(os.path.abspath(output))
    if not os.path.isdir(folder):
        raise UsageError(f"output folder {folder!r} does not exist")
    try:  # a real file, not permission bits (read-only mounts, /proc, root)
        check_local_output_folder(folder)
    except StorageError as exc:
        raise UsageError(str(exc)) from exc


def _check_output_folder(output: str, options=None) -> None:
    """``-o scan/`` (or a local folder that exists): the nested Parquet dataset's folder,
    which must hold nothing but parts of one (its old parts are replaced)."""
    formats = (options.view_as(DicomExtractOptions).format if options else "csv").split(",")
    if "nested" not in formats:
        # A trailing separator names a folder even before it exists; say so here rather
        # than fail later on the lock file inside it.
        example = FileSystems.join(output, "scan.csv") if "://" in output else \
            os.path.join(output, "scan.csv")
        raise UsageError(f"output {output!r} is a directory; name a file such as {example}, "
                         "or write the nested Parquet dataset there with --format nested")
    stem = folder_stem(output)
    if is_bucket(output) and not storage.split_bucket(stem)[1]:
        raise UsageError(f"output {output!r} is a whole bucket; name a folder in it, "
                         f"such as {stem}/scan/")
    if "://" not in output and os.path.exists(stem) and not os.path.isdir(stem):
        raise UsageError(f"output {output!r}: {stem!r} is a file, not a folder")
    try:
        foreign = foreign_files(stem + "/")
    except Exception as exc:  # pylint: disable=broad-except
        raise UsageError(f"output {output!r} cannot be listed: {exc}") from exc
    if foreign:
        raise UsageError(f"output folder {output!r} holds files that are not parts of a "
                         f"nested dataset (such as {foreign[0]!r}); name a new or empty "
                         "folder")


def parse(argv: list[str], stdout=None, stderr=None):
    """Return (inputs, pipeline options, quiet) or raise UsageError; ``--help`` goes to
    ``stdout``, warnings about the options (a random pseudonym key) to ``stderr``."""
    parser = _parser(stdout)
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
    _check_content(options.view_as(DicomExtractOptions), stderr)
    return inputs, options, args.quiet


def _check_content(extract_options, stderr=None) -> None:
    """Tag lists are checked as they are parsed; here what needs them all (and the key file)."""
    try:
        content = ContentSettings.from_options(extract_options, key=b"check only")
    except ContentOptionError as exc:
        raise UsageError(str(exc)) from exc
    warn_random_key(content, PROG, stderr)


