"""The whole pipeline, in one place:
discover -> extract (archive members too) -> spill -> columns -> CSV and/or Parquet ->
report -> HTML report."""

from __future__ import annotations

import apache_beam as beam

from transforms.archives import UNITS, CountMatched, ReadArchives
from transforms.columns import ComputeColumns
from transforms.discover import MatchInputs
from transforms.extract import ARCHIVES, ERRORS, SKIPPED, ExtractHeaders
from transforms.flatten import FlattenSettings
from transforms.manifest import (
    MANIFEST, KeepFileMetadata, WriteOutcomes, commit_state, prepare_state, skip_records,
)
from transforms.html_report import WriteHtmlReport, run_settings
from transforms.report import OutputPaths, WriteReport
from transforms.reuse import PlanReuse
from transforms.rowstore import StoreRows
from transforms.write_csv import WriteCsv
from transforms.write_parquet import WriteParquet


def build_pipeline(pipeline, inputs, options, paths: OutputPaths, started: float, progress=None):
    """Add the extraction to ``pipeline``; returns the PCollection holding the summary."""
    settings = FlattenSettings(
        include_private=options.include_private,
        max_sequence_items=options.max_sequence_items,
        max_binary_bytes=options.max_binary_bytes,
    )
    # Rows are spilled into a generation of the state directory, kept as the manifest
    # and row store the next run reuses (see transforms/manifest.py).
    state = prepare_state(paths.table, paths.temp_dir, settings, options.incremental,
                          options.read_archives)
    files = pipeline | "Discover" >> MatchInputs(inputs, progress)
    plan = files | "Reuse" >> PlanReuse(state, options.rows_per_shard, progress)
    extracted = plan["extract"] | "Extract" >> beam.ParDo(
        KeepFileMetadata(ExtractHeaders(settings, progress, options.read_archives))
    ).with_outputs(ERRORS, SKIPPED, MANIFEST, ARCHIVES, main="rows")
    # Zip and tar members: extracted like files, named ARCHIVE!/MEMBER.
    members = extracted[ARCHIVES] | "Archives" >> ReadArchives(settings, progress)
    spilled = (extracted.rows, members["rows"]) | "AllRows" >> beam.Flatten() | "Spill" >> (
        beam.ParDo(StoreRows(state.generation, options.rows_per_shard))
    )
    shards = (spilled, plan["shards"]) | "AllShards" >> beam.Flatten()
    errors = (extracted[ERRORS], members[ERRORS]) | "AllErrors" >> beam.Flatten()
    skipped = (
        extracted[SKIPPED],
        members[SKIPPED],
        plan["manifest"] | "ReusedSkips" >> beam.FlatMap(skip_records),
    ) | "AllSkipped" >> beam.Flatten()
    manifest_parts = (
        (extracted[MANIFEST], members[MANIFEST], plan["manifest"])
        | "AllOutcomes" >> beam.Flatten()
        | "WriteOutcomes" >> beam.ParDo(WriteOutcomes(state.generation))
    )
    counted = (files, members[UNITS], plan["archive_units"]) | "Matched" >> CountMatched()
    matched = counted | "MatchedFiles" >> beam.Map(lambda pair: pair[0])
    columns = shards | "Columns" >> ComputeColumns()
    extra = plan["counts"] | "AddArchives" >> beam.Map(
        lambda counts, pair: {**counts, "archives": pair[1]}, beam.pvalue.AsSingleton(counted)
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
        table_rows = (shards, columns) | "WriteCsv" >> WriteCsv(paths.table, paths.temp_dir)
    summary = (
        matched, table_rows, columns, errors, skipped, extra
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
