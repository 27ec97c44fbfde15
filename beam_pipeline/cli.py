"""``dicom-meta-extract INPUT... -o OUT.csv [options] [any Beam option]``.

The command line's plumbing in one place: where its output goes (``stdout``/``stderr``,
injectable for tests), what it prints, and its exit status: 0 done, 1 done but files
unaccounted for (or stopped by a full disk), 2 a usage error or a locked output,
reported in one line before any work starts (``beam_pipeline/arguments.py`` checks the
arguments), 130/143 stopped by Ctrl-C/SIGTERM.

Beam is imported only inside :func:`main`, after :func:`quiet_dependencies`: importing
it is what makes some of its dependencies warn (``beam_pipeline/quiet.py``).
"""

from __future__ import annotations

import argparse
import sys

import yaml

from beam_pipeline.quiet import quiet_dependencies

EXIT_DONE, EXIT_UNACCOUNTED, EXIT_USAGE = 0, 1, 2
EXIT_FAILED = 1  # stopped mid-run by a fault (a full disk): outputs as before


def console_flags(argv: list[str]) -> argparse.Namespace:
    """``--quiet`` and ``--verbose`` (or ``verbose: true`` in the ``--config`` file), read
    before Beam is imported: they decide what it may print. The full parser checks them
    again with everything else, and reports a config file it cannot read."""
    early = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    early.add_argument("--quiet", action="store_true")
    early.add_argument("--verbose", action="store_true")
    early.add_argument("--config")
    flags = early.parse_known_args([arg for arg in argv if arg != "--"])[0]
    if flags.config and not flags.verbose:
        try:
            with open(flags.config, encoding="utf-8") as stream:
                config = yaml.safe_load(stream)
        except (OSError, yaml.YAMLError):
            config = None
        flags.verbose = isinstance(config, dict) and config.get("verbose") is True
    return flags


def main(argv: list[str] | None = None, stdout=None, stderr=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    flags = console_flags(argv)
    quiet_dependencies(flags.verbose)
    # pylint: disable=import-outside-toplevel  # after quiet_dependencies, on purpose
    from beam_pipeline.arguments import UsageError, error_line, output_folder, parse
    from beam_pipeline.launch import describe, run
    from beam_pipeline.lock import OutputLocked
    from beam_pipeline.stopping import Stopped, disk_full, stopped_in

    options = None
    try:
        inputs, options, quiet = parse(argv, stdout, stderr)
        summary = run(inputs, options, quiet, flags.verbose, stderr)
    except (UsageError, OutputLocked) as exc:
        print(error_line(exc), file=stderr)
        return EXIT_USAGE
    except (Stopped, Exception) as exc:  # pylint: disable=broad-except  # two cases are ours
        # Ctrl-C (130) or SIGTERM (143), raised as it is or, when the signal came while
        # Beam ran a bundle in this thread, inside Beam's RuntimeError.
        stopped = stopped_in(exc)
        if stopped is not None:
            print(error_line(f"stopped by {stopped}; the previous outputs are unchanged"),
                  file=stderr)
            return stopped.exit_status
        full = disk_full(exc)
        if full is None:
            raise
        print(error_line(f"disk full (no space left on device) writing "
                         f"{full or output_folder(options)}; the previous outputs are "
                         "unchanged"), file=stderr)
        return EXIT_FAILED
    if not quiet:
        print(describe(summary), file=stderr)
    return EXIT_DONE if summary["accounted_for"] else EXIT_UNACCOUNTED
