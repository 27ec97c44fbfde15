"""The whole pipeline, in one place: discover -> extract -> spill -> columns -> CSV -> report."""

from __future__ import annotations

import apache_beam as beam

from transforms.columns import ComputeColumns
from transforms.discover import MatchInputs
from transforms.extract import ERRORS, SKIPPED, ExtractHeaders
from transforms.flatten import FlattenSettings
from transforms.report import OutputPaths, WriteReport
from transforms.spill import SpillRows
from transforms.write_csv import WriteCsv


def build_pipeline(pipeline, inputs, options, paths: OutputPaths, started: float, progress=None):
    """Add the extraction to ``pipeline``; returns the PCollection holding the summary."""
    settings = FlattenSettings(
        include_private=options.include_private,
        max_sequence_items=options.max_sequence_items,
        max_binary_bytes=options.max_binary_bytes,
    )
    files = pipeline | "Discover" >> MatchInputs(inputs, progress)
    extracted = files | "Extract" >> beam.ParDo(
        ExtractHeaders(settings, progress)
    ).with_outputs(ERRORS, SKIPPED, main="rows")
    shards = extracted.rows | "Spill" >> beam.ParDo(
        SpillRows(paths.temp_dir, options.rows_per_shard)
    )
    columns = shards | "Columns" >> ComputeColumns()
    table_rows = (shards, columns) | "WriteCsv" >> WriteCsv(paths.table, paths.temp_dir)
    return (
        files, table_rows, columns, extracted[ERRORS], extracted[SKIPPED]
    ) | "Report" >> WriteReport(paths, started)
