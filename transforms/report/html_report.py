"""The HTML report step: ``scan.report.html``, written once the table and summary are.

It reads only what the run wrote (the table's figures, ``errors.csv``, ``skipped.csv``
and the summary), never the source files: under de-identification the table already
holds the de-identified values, so the page can show nothing else. The table's figures
are computed by the table writers as they write it (``tables.TABLE_STATS``), or else by
streaming the written table (``table_stats``); either way the step's memory does not
grow with the rows. It runs as one ordinary Beam step, so it works on every runner, and
it writes under a temporary name then renames, so a retried step just writes the same
page again.
"""

from __future__ import annotations

import csv
import datetime
import io
import logging
import re

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, StandardOptions

from transforms.common.atomic_files import write_atomically
from transforms.common.beam_internals import add_option_arguments
from transforms.output.series_tables import SERIES_REPORT
from transforms.output.tables import TABLE_STATS
from transforms.report.page import render
from transforms.output.counters import ValueCounts
from transforms.output.table_stats import scan_csv, scan_parquet

ERROR_SAMPLE_PER_TYPE = 10
ERROR_SAMPLE = 100
_SECRET = re.compile(r"secret|token|password|credential|access_key|key_id|api_key", re.I)


def run_settings(options: PipelineOptions, inputs) -> dict:
    """What the page shows under "Run": runner, inputs, our options and Beam's non-default
    ones (secrets hidden). Plain data, computed once when the pipeline is built."""
    all_options = options.get_all_options(retain_unknown_options=False)
    non_default = options.get_all_options(drop_default=True)
    ours = set()
    for cls in PipelineOptions.__subclasses__():
        if cls.__module__.split(".")[0] != "apache_beam":
            parser = _Recorder()
            add_option_arguments(cls, parser)
            ours.update(parser.dests)
    shown = {}
    for key in sorted(ours | set(non_default)):
        value = all_options.get(key, non_default.get(key))
        if _SECRET.search(key) and value not in (None, "", False):
            value = "(hidden)"
        shown[key] = value if isinstance(value, (str, int, float, bool, list, dict)) or \
            value is None else str(value)
    runner = options.view_as(StandardOptions).runner
    if runner in (None, "DirectRunner", "FnApiRunner"):
        direct = options.view_as(DirectOptions)
        workers = direct.direct_num_workers or "one per core"
        runner = f"local runner: {direct.direct_running_mode}, workers: {workers}"
    return {"runner": runner, "inputs": [str(path) for path in inputs], "options": shown}


class _Recorder:
    """Collects the option names (``dest``) an options class declares."""

    def __init__(self):
        self.dests = []

    def add_argument(self, *args, **kwargs):
        dest = kwargs.get("dest") or next(
            (name.lstrip("-").replace("-", "_") for name in args if name.startswith("--")),
            args[0].lstrip("-"))
        self.dests.append(dest)

    add_value_provider_argument = add_argument

    def add_argument_group(self, *args, **kwargs):
        return self


def _records(path: str):
    try:
        with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as stream:
            reader = csv.reader(io.TextIOWrapper(stream, encoding="utf-8", newline=""))
            next(reader, None)
            yield from reader
    except FileNotFoundError:
        return


def read_errors(path: str) -> dict:
    """Errors by type (counted) and a sample of them: up to ``ERROR_SAMPLE_PER_TYPE`` of each
    type, ``ERROR_SAMPLE`` in all, in the file's (path) order."""
    by_type, sample, per_type = ValueCounts(), [], {}
    for record in _records(path):
        path_text, kind, message = (record + ["", "", ""])[:3]
        by_type.add(kind)
        if len(sample) < ERROR_SAMPLE and per_type.get(kind, 0) < ERROR_SAMPLE_PER_TYPE:
            per_type[kind] = per_type.get(kind, 0) + 1
            sample.append((path_text, kind, message[:500]))
    return {"by_type": by_type.as_dict(), "sample": sample}


def read_skips(path: str) -> dict:
    by_reason = ValueCounts()
    for record in _records(path):
        by_reason.add((record + ["", ""])[1])
    return {"by_reason": by_reason.as_dict()}


def table_statistics(paths) -> tuple[dict | None, str]:
    """Stats of the written table (the CSV if there is one, else the Parquet file), or
    (None, why) when it cannot be read: the page still shows the summary's figures."""
    try:
        if "csv" in paths.formats:
            return scan_csv(paths.table).as_dict(), ""
        return scan_parquet(paths.parquet).as_dict(), ""
    except Exception as exc:  # pylint: disable=broad-except
        logging.warning("report: cannot compute table figures: %s", exc)
        return None, f"{type(exc).__name__}: {exc}"


def write_html_report(summary: dict, paths, settings: dict, table_figures: dict | None = None
                      ) -> str:
    """``table_figures``: the table writers' figures; their ``table_stats`` saves reading
    the table back."""
    stats = (table_figures or {}).get(TABLE_STATS)
    problem = ""
    if stats is None:
        stats, problem = table_statistics(paths)
    generated = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    page = render(summary, stats, problem, read_errors(paths.errors), read_skips(paths.skipped),
                  settings, generated, (table_figures or {}).get(SERIES_REPORT))
    write_atomically(paths.report, page.encode("utf-8", "backslashreplace"))
    return paths.report


class WriteHtmlReport(beam.PTransform):
    """summary -> ``scan.report.html``; outputs the report's path. ``tables``: the
    single dict of figures of ``tables.WriteTables``, if the pipeline has one."""

    def __init__(self, paths, settings: dict, tables=None):
        super().__init__()
        self.paths = paths
        self.settings = settings
        self.tables = tables

    def expand(self, summary):
        if self.tables is None:
            return summary | "Write" >> beam.Map(write_html_report, self.paths, self.settings)
        return summary | "Write" >> beam.Map(write_html_report, self.paths, self.settings,
                                             beam.pvalue.AsSingleton(self.tables))
