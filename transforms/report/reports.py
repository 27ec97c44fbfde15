"""The report step: the run's records -> ``errors.csv``, ``skipped.csv``, ``summary.json``,
then the HTML report (``summary.py``, ``html_report.py``).

Everything here is small: counts, the errors and skips (pseudonymized when paths are),
and the table writers' figures. The summary's extras (reuse, archives, readers, content
settings, bounded cells, table figures) are joined in one step, since every side input
of a step of its own costs a stage.
"""

from __future__ import annotations

import apache_beam as beam

from transforms.common.tags import (
    ARCHIVE_UNITS, CELL_COUNTS, COLUMNS, CONTENT_TOTALS, DROPPED_WHEN_READ, ERRORS,
    HTML_REPORT, MATCHED, READER_TOTALS, REUSE_COUNTS, REUSED_ARCHIVE_UNITS, REUSED_MANIFEST,
    SERIES_FIGURES, SKIPPED, SUMMARY, TABLE_FIGURES,
)
from transforms.content.settings import PseudonymizeReportPaths, TablePath
from transforms.output.reuse import skip_records
from transforms.output.tables import TABLE_STATS
from transforms.reading.archives import CountMatched
from transforms.report.html_report import WriteHtmlReport
from transforms.report.summary import OutputPaths, WriteReport


def summary_extras(reuse: dict, matched: tuple, reader: dict, content: dict, cells: dict,
                   tables: dict, content_totals: dict) -> dict:
    """The summary's figures besides the counts: reuse, archives, readers, content
    settings, bounded cells, the table writers' figures and de-identification's."""
    if DROPPED_WHEN_READ in reader:  # DICOMweb rows found gone by the reader, not the plan
        reader = dict(reader)
        reuse = {**reuse, "files_dropped": reuse.get("files_dropped", 0)
                 + reader.pop(DROPPED_WHEN_READ)}
    return {
        **reuse, "archives": matched[1], **reader, **content, **cells, **content_totals,
        **{key: value for key, value in tables.items() if key not in ("rows", TABLE_STATS)},
    }


def files_matched(matched_and_archives: tuple) -> int:
    return matched_and_archives[0]


def table_rows(figures: dict) -> int:
    return figures["rows"]


def with_series(table_figures: dict, series_figures: dict) -> dict:
    """The HTML report's figures: the table's and the series tables' together."""
    return {**table_figures, **series_figures}


class WriteReports(beam.PTransform):
    """The run's records -> {SUMMARY: the summary dict as written, HTML_REPORT: the page's
    path}. Reads MATCHED, ARCHIVE_UNITS, REUSED_ARCHIVE_UNITS, ERRORS, SKIPPED,
    REUSED_MANIFEST, REUSE_COUNTS, READER_TOTALS, CELL_COUNTS, COLUMNS, TABLE_FIGURES,
    CONTENT_TOTALS and, when the series tables are written, SERIES_FIGURES."""

    def __init__(self, paths: OutputPaths, started: float, table_path: TablePath,
                 content_summary: dict, run_settings: dict):
        super().__init__()
        self.paths = paths
        self.started = started
        self.table_path = table_path
        self.content_summary = content_summary
        self.run_settings = run_settings

    def expand(self, records):
        # Matched files, each archive counted as its members, and the number of archives.
        counted = (
            records[MATCHED], records[ARCHIVE_UNITS], records[REUSED_ARCHIVE_UNITS]
        ) | "Matched" >> CountMatched()
        extras = records[REUSE_COUNTS] | "SummaryExtras" >> beam.Map(
            summary_extras,
            beam.pvalue.AsSingleton(counted), beam.pvalue.AsSingleton(records[READER_TOTALS]),
            self.content_summary, beam.pvalue.AsSingleton(records[CELL_COUNTS]),
            beam.pvalue.AsSingleton(records[TABLE_FIGURES]),
            beam.pvalue.AsSingleton(records[CONTENT_TOTALS]),
        )
        errors = records[ERRORS] | "ErrorPaths" >> PseudonymizeReportPaths(self.table_path)
        skipped = (
            (records[SKIPPED],
             records[REUSED_MANIFEST] | "ReusedSkips" >> beam.FlatMap(skip_records))
            | "AllSkipped" >> beam.Flatten()
            | "SkippedPaths" >> PseudonymizeReportPaths(self.table_path)
        )
        summary = (
            counted | "MatchedFiles" >> beam.Map(files_matched),
            records[TABLE_FIGURES] | "TableRows" >> beam.Map(table_rows),
            records[COLUMNS], errors, skipped, extras,
        ) | "Summary" >> WriteReport(self.paths, self.started)
        figures = records[TABLE_FIGURES]
        if SERIES_FIGURES in records:  # the page waits for the series tables too
            figures = figures | "WithSeries" >> beam.Map(
                with_series, beam.pvalue.AsSingleton(records[SERIES_FIGURES]))
        html = summary | "HtmlReport" >> WriteHtmlReport(self.paths, self.run_settings, figures)
        return {SUMMARY: summary, HTML_REPORT: html}
