"""The whole pipeline, in one place:
discover -> extract -> spill -> columns -> CSV and/or Parquet -> report -> HTML report."""

from __future__ import annotations

import apache_beam as beam

from transforms.columns import ComputeColumns
from transforms.content import ContentSettings, PseudonymizeReportPaths, RowContent, TablePath
from transforms.discover import MatchInputs
from transforms.extract import ERRORS, SKIPPED, ExtractHeaders
from transforms.flatten import FlattenSettings
from transforms.manifest import (
    MANIFEST, KeepFileMetadata, WriteOutcomes, commit_state, prepare_state, skip_record,
)
from transforms.html_report import WriteHtmlReport, run_settings
from transforms.report import OutputPaths, WriteReport
from transforms.reuse import PlanReuse
from transforms.rowstore import StoreRows
from transforms.write_csv import WriteCsv
from transforms.write_parquet import WriteParquet


def build_pipeline(pipeline, inputs, options, paths: OutputPaths, started: float, progress=None):
    """Add the extraction to ``pipeline``; returns the PCollection holding the summary."""
    # Tag selection and de-identification (transforms/content.py): the walker reads only
    # selected elements; each row is de-identified before it leaves extraction.
    content = ContentSettings.from_options(options)
    settings = FlattenSettings(
        include_private=content.reads_private(options.include_private),
        max_sequence_items=options.max_sequence_items,
        max_binary_bytes=options.max_binary_bytes,
        selection=content.selection or None,
    )
    # Rows are spilled into a generation of the state directory, kept as the manifest
    # and row store the next run reuses (see transforms/manifest.py).
    state = prepare_state(
        paths.table, paths.temp_dir, settings, options.incremental, content.fingerprint()
    )
    files = pipeline | "Discover" >> MatchInputs(inputs, progress)
    table_path = TablePath(content)  # DicomPath as the outputs show it
    plan = files | "Reuse" >> PlanReuse(state, options.rows_per_shard, progress, table_path)
    extracted = plan["extract"] | "Extract" >> beam.ParDo(
        KeepFileMetadata(ExtractHeaders(settings, progress, RowContent(content)))
    ).with_outputs(ERRORS, SKIPPED, MANIFEST, main="rows")
    spilled = extracted.rows | "Spill" >> beam.ParDo(
        StoreRows(state.generation, options.rows_per_shard)
    )
    shards = (spilled, plan["shards"]) | "AllShards" >> beam.Flatten()
    skipped = (
        extracted[SKIPPED],
        plan["manifest"] | "ReusedSkips" >> beam.Map(skip_record),
    ) | "AllSkipped" >> beam.Flatten()
    manifest_parts = (
        (extracted[MANIFEST], plan["manifest"])
        | "AllOutcomes" >> beam.Flatten()
        | "WriteOutcomes" >> beam.ParDo(WriteOutcomes(state.generation))
    )
    columns = shards | "Columns" >> ComputeColumns()
    extra = plan["counts"] | "AddContentSettings" >> beam.Map(
        lambda counts, entries: {**counts, **entries}, content.summary()
    )
    if "parquet" in paths.formats:
        parquet = (shards, columns) | "WriteParquet" >> WriteParquet(
            paths.parquet, paths.temp_dir
        )
        table_rows = parquet | "ParquetRows" >> beam.Map(lambda stats: stats["parquet_rows"])
        extra = extra | "AddParquetStats" >> beam.Map(
            lambda counts, stats: {**counts, **stats}, beam.pvalue.AsSingleton(parquet)
        )
    if "csv" in paths.formats:
        table_rows = (shards, columns) | "WriteCsv" >> WriteCsv(
            paths.table, paths.temp_dir, content.csv_formula_guard
        )
    errors = extracted[ERRORS] | "ErrorPaths" >> PseudonymizeReportPaths(table_path)
    skipped = skipped | "SkippedPaths" >> PseudonymizeReportPaths(table_path)
    summary = (
        files, table_rows, columns, errors, skipped, extra
    ) | "Report" >> WriteReport(paths, started)
    summary | "HtmlReport" >> WriteHtmlReport(paths, run_settings(options, inputs))
    summary | "CommitState" >> beam.Map(
        commit_state,
        state,
        paths.temp_dir,
        beam.pvalue.AsList(shards),
        beam.pvalue.AsList(manifest_parts),
    )
    return summary
