"""The whole pipeline, in one composite transform:

    discover -> plan reuse -> extract -> store rows -> write tables -> report -> commit

Each step is a composite of its stage package (``transforms/``); the steps hand each
other dicts of named PCollections (keys in ``transforms/common/tags.py``). Everything a
run decides before any work (settings, content policy, this run's state generation and
what it may reuse) is prepared by :func:`plan_run` before the graph is built, so
building the graph reads and writes nothing.

What each write does and why it is safe to retry: ``transforms/output/__init__.py``.
``docs/architecture.md`` draws the stages and what flows between them.
"""

from __future__ import annotations

from dataclasses import dataclass

import apache_beam as beam

from transforms.common.tags import (
    ERRORS, MATCHED, SHARDS, TO_EXTRACT, WEB_REUSED_UNITS, WEB_SERIES, WEB_TO_READ,
)
from transforms.content.settings import ContentSettings, RowContent, TablePath
from transforms.inputs.dicomweb import DicomWebSettings, ListDicomWeb, is_dicomweb
from transforms.inputs.discover import MatchInputs
from transforms.inputs.limits import FileLimits
from transforms.output.commit import CommitRun
from transforms.output.nested_parts import PartFiles, WriteTablesAndParts
from transforms.output.reuse import PlanReuse
from transforms.output.spill import StoreRows
from transforms.output.state import RunState, prepare_state
from transforms.output.series_tables import SeriesFiles, WriteSeriesTables, series_files
from transforms.output.tables import TableFiles
from transforms.output.write_tables import WriteTables
from transforms.reading.dicomweb_rows import ReadDicomWeb, with_dicomweb
from transforms.reading.extraction import ExtractRows, ReadingSettings
from transforms.reading.flatten import FlattenSettings
from transforms.report.html_report import run_settings
from transforms.report.reports import WriteReports
from transforms.report.summary import OutputPaths


@dataclass(frozen=True)
class RunPlan:
    """What one run does, decided before the graph is built."""

    inputs: tuple
    paths: OutputPaths
    started: float
    reading: ReadingSettings
    state: RunState
    rows_per_shard: int
    table_path: TablePath  # DicomPath as the outputs show it
    csv_formula_guard: bool
    content_summary: dict
    run_settings: dict
    column_names: str = "seed"  # --column-names (transforms/output/keyword_names.py)
    series_files: SeriesFiles | None = None  # None: --no-series-tables
    hidden_keys: tuple = ()  # series keys read for grouping only (a tag selection's)
    # DICOMweb sources: their inputs, and how to reach them (secrets read).
    dicomweb_inputs: tuple = ()
    dicomweb: DicomWebSettings | None = None
    rows_per_part: int = 10_000  # --rows-per-part: -o FOLDER/ (nested_parts.py)

    @property
    def table_files(self) -> TableFiles:
        formats = self.paths.formats
        return TableFiles(self.paths.table if "csv" in formats else None,
                          self.paths.parquet if "parquet" in formats else None,
                          self.column_names,
                          self.paths.jsonl if "json" in formats else None,  # --format json
                          self.paths.nested if "nested" in formats else None)  # and nested

    @property
    def part_files(self) -> PartFiles | None:
        """-o FOLDER/ with --format nested: the dataset's parts, written in parallel."""
        if not self.paths.nested_parts:
            return None
        return PartFiles(self.paths.nested_parts, self.rows_per_part)


def plan_run(inputs, options, paths: OutputPaths, started: float) -> RunPlan:
    """Settings and state for a run: ``options`` are the DicomExtractOptions view.

    Creates this run's state generation (rows are spilled into it and kept for the next
    run) and lists what earlier runs left to reuse. Rows whose DicomPath is a pseudonym
    cannot be matched to their files again, so they are never reused."""
    # Tag selection and de-identification (transforms/content/): the walker reads only
    # selected elements; each row is de-identified before it leaves extraction.
    content = ContentSettings.from_options(options)
    flatten = FlattenSettings(
        include_private=content.reads_private(options.include_private),
        # --format json / nested: rows carry their DICOM JSON (transforms/reading/dicom_json.py)
        dicom_json=bool({"json", "nested"} & set(paths.formats)),
        max_sequence_items=options.max_sequence_items,
        max_binary_bytes=options.max_binary_bytes,
        max_values=options.max_values,
        max_cell_chars=options.max_cell_chars,
        selection=content.selection or None,
    )
    table_path = TablePath(content)
    state = prepare_state(
        paths.table, paths.temp_dir, flatten, options.incremental, content.fingerprint(),
        reusable=not table_path, read_archives=options.read_archives,
    )
    # DICOMweb sources are listed by their own step; their secrets are read here, once.
    web_inputs = tuple(path for path in inputs if is_dicomweb(path))
    web = DicomWebSettings.from_options(options) if web_inputs else None
    return RunPlan(
        inputs=tuple(path for path in inputs if not is_dicomweb(path)),
        paths=paths,
        started=started,
        reading=ReadingSettings(
            flatten=flatten,
            limits=FileLimits(seconds=options.file_timeout,
                              header_bytes=options.max_header_bytes),
            content=RowContent(content),
            read_archives=options.read_archives,
        ),
        state=state,
        rows_per_shard=options.rows_per_shard,
        table_path=table_path,
        csv_formula_guard=content.csv_formula_guard,
        content_summary=content.summary(),
        run_settings=run_settings(options, inputs),
        column_names=options.column_names,
        series_files=series_files(paths.summary[: -len(".summary.json")], paths.formats)
        if options.series_tables else None,
        hidden_keys=tuple(content.hidden_columns),
        dicomweb_inputs=web_inputs,
        dicomweb=web,
        rows_per_part=options.rows_per_part,
    )


class ExtractDicomMetadata(beam.PTransform):
    """Inputs -> the tables, errors, skips, summary and HTML report of one run, and its
    committed state; outputs the summary dict."""

    def __init__(self, run: RunPlan, progress=None):
        super().__init__()
        self.run = run
        self.progress = progress

    def expand(self, pbegin):
        run = self.run
        files = pbegin | "Discover" >> MatchInputs(run.inputs, self.progress)
        found = files
        if run.dicomweb_inputs:  # their series are listed, then reused or read
            listed = pbegin | "ListDicomWeb" >> ListDicomWeb(run.dicomweb_inputs, run.dicomweb)
            found = {MATCHED: files, WEB_SERIES: listed["series"]}
        planned = found | "PlanReuse" >> PlanReuse(
            run.state, run.rows_per_shard, self.progress, run.dicomweb)
        extracted = planned[TO_EXTRACT] | "Extract" >> ExtractRows(run.reading, self.progress)
        records = {MATCHED: files, **planned, **extracted}
        if run.dicomweb_inputs:  # their rows, errors and counts join the files'.
            web = {WEB_TO_READ: planned[WEB_TO_READ], WEB_REUSED_UNITS: planned[WEB_REUSED_UNITS],
                   ERRORS: listed[ERRORS]} | "DicomWeb" >> ReadDicomWeb(
                run.dicomweb, run.reading.flatten, run.reading.content, self.progress)
            records = with_dicomweb(records, web)
        stored = records | "StoreRows" >> StoreRows(run.state.generation, run.rows_per_shard)
        tables = stored[SHARDS] | "WriteTables" >> (
            WriteTables(run.table_files, run.paths.temp_dir, run.csv_formula_guard)
            if run.part_files is None else  # -o FOLDER/: the nested table as parts
            WriteTablesAndParts(run.table_files, run.part_files, run.paths.temp_dir,
                                run.csv_formula_guard))
        if run.series_files is not None:
            tables.update({**stored, **tables} | "WriteSeriesTables" >> WriteSeriesTables(
                run.series_files, run.paths.temp_dir, run.csv_formula_guard, run.hidden_keys))
        reports = {**records, **tables} | "Report" >> WriteReports(
            run.paths, run.started, run.table_path, run.content_summary, run.run_settings)
        return {**stored, **reports} | "Commit" >> CommitRun(run.state, run.paths.temp_dir)


def build_pipeline(pipeline, inputs, options, paths: OutputPaths, started: float, progress=None):
    """Plan the run and add it to ``pipeline``; returns the PCollection holding the summary."""
    run = plan_run(inputs, options, paths, started)
    return pipeline | "ExtractDicomMetadata" >> ExtractDicomMetadata(run, progress)
