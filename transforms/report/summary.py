"""Report: errors.csv, skipped.csv and summary.json, written once the table is in place
(then the HTML report from them: transforms/report/html_report.py).

Every matched file is either a row, an error (with its reason) or a skipped non-DICOM
file (with its reason); the summary checks that the three add up to the files matched.
"""

from __future__ import annotations

import csv
import io
import json
import time
from typing import NamedTuple

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from transforms.common.atomic_files import write_atomically
from transforms.output.nested_parts import folder_stem, is_folder_output


class OutputPaths(NamedTuple):
    """Where one run writes: ``scan.csv`` gives ``scan.errors.csv`` and so on."""

    table: str
    errors: str
    skipped: str
    summary: str
    temp_dir: str
    parquet: str = ""  # ``scan.csv`` or ``scan.parquet`` gives ``scan.parquet``
    formats: tuple = ("csv",)
    report: str = ""  # scan.report.html (transforms/report/html_report.py)
    jsonl: str = ""  # scan.jsonl: --format json (transforms/reading/dicom_json.py)
    nested: str = ""  # scan.nested.parquet: --format nested (transforms/output/nested.py)
    # -o scan/: the nested table as the dataset scan/part-*.parquet, the rest beside it
    # (transforms/output/nested_parts.py).
    nested_parts: str = ""

    @classmethod
    def for_output(cls, output: str, run_id: str, formats=("csv",)) -> "OutputPaths":
        folder = ""
        if is_folder_output(output):
            folder = folder_stem(output) + "/"
            output = folder_stem(output) + ".csv"
        parquet = output.lower().endswith(".parquet")
        if parquet:
            stem = output[: -len(".parquet")]
        else:
            stem = output[: -len(".csv")] if output.lower().endswith(".csv") else output
        directory, name = FileSystems.split(stem)
        return cls(
            table=stem + ".csv" if parquet else output,
            errors=stem + ".errors.csv",
            skipped=stem + ".skipped.csv",
            summary=stem + ".summary.json",
            temp_dir=FileSystems.join(directory, f".{name}.tmp-{run_id}"),
            parquet=output if parquet else stem + ".parquet",
            formats=tuple(formats),
            report=stem + ".report.html",
            jsonl=stem + ".jsonl",
            nested=stem + ".nested.parquet" if not folder else "",
            nested_parts=folder,
        )

    @property
    def outputs(self) -> list[str]:
        """The tables this run writes, in ``formats`` order."""
        files = {"csv": self.table, "parquet": self.parquet, "json": self.jsonl,
                 "nested": self.nested_parts or self.nested}
        return [files[fmt] for fmt in self.formats]


def write_csv_file(path: str, header: list[str], records) -> None:
    """A small CSV (errors, skipped) written whole, under a temporary name first."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(header)
    writer.writerows(sorted(records))
    write_atomically(path, buffer.getvalue().encode("utf-8", "backslashreplace"))


def write_report(_, paths: OutputPaths, started: float, matched, rows, columns, errors, skipped,
                 extra=None):
    from transforms.inputs import storage

    storage.prepare_filesystems()
    # ErrorType: transforms/reading/errors.py's vocabulary; Exception: the original exception.
    write_csv_file(paths.errors, ["DicomPath", "ErrorType", "Message", "Exception"], errors)
    write_csv_file(paths.skipped, ["DicomPath", "Reason"], skipped)
    summary = {
        "files_matched": matched,
        "rows": rows,
        "errors": len(errors),
        "non_dicom_skipped": len(skipped),
        "columns": len(columns),
        "accounted_for": matched == rows + len(errors) + len(skipped),
        "seconds": round(time.time() - started, 3),
        "table": paths.outputs[0],
        "outputs": paths.outputs,
        "errors_file": paths.errors,
        "skipped_file": paths.skipped,
        "report_file": paths.report,
        **(extra or {}),
    }
    write_atomically(paths.summary, json.dumps(summary, indent=2).encode("utf-8"))
    return summary


class WriteReport(beam.PTransform):
    """Writes the report after the table; its output is the summary dict."""

    def __init__(self, paths: OutputPaths, started: float):
        super().__init__()
        self.paths = paths
        self.started = started

    def expand(self, inputs):
        # ``matched``: one int, the files (and archive members) matched.
        # An optional sixth input: one dict of extra summary entries (incremental runs).
        matched, table_rows, columns, errors, skipped, *extra = inputs
        extra_inputs = [beam.pvalue.AsSingleton(extra[0])] if extra else []
        return (
            matched.pipeline
            | "Once" >> beam.Create([None])
            | "Write" >> beam.Map(
                write_report,
                self.paths,
                self.started,
                beam.pvalue.AsSingleton(matched),
                beam.pvalue.AsSingleton(table_rows),
                beam.pvalue.AsSingleton(columns),
                beam.pvalue.AsList(errors),
                beam.pvalue.AsList(skipped),
                *extra_inputs,
            )
        )
