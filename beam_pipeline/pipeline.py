"""The whole pipeline, in one place:
discover -> reuse -> extract (archive members too) -> spill -> columns -> tables -> report -> HTML report
-> commit -> cleanup.

What each write does and why it is safe to retry: ``transforms/output/__init__.py``.
"""

from __future__ import annotations

import apache_beam as beam

from transforms.common.batches import BatchFiles
from transforms.common.tags import ARCHIVES, ARCHIVE_UNITS, ERRORS, MANIFEST, READER_COUNTS, SKIPPED
from transforms.common.tags import CONTENT_COUNTS  # issue 24
from transforms.reading.archives import CountMatched, ReadArchives
from transforms.reading.file_outcomes import KeepFileMetadata
from transforms.reading.cells import BoundCells, CountBoundedCells
from transforms.output.columns import ComputeColumns
from transforms.content.settings import ContentSettings, PseudonymizeReportPaths, RowContent, TablePath
from transforms.content.settings import SumContentCounts  # issue 24
from transforms.inputs.discover import MatchInputs
from transforms.reading.extract import ExtractHeaders, SumReaderCounts
from transforms.inputs.limits import FileLimits
from transforms.reading.flatten import FlattenSettings
from transforms.report.html_report import WriteHtmlReport, run_settings
from transforms.output.cleanup import cleanup
from transforms.output.reuse import PlanReuse, skip_records
from transforms.output.spill import SpillRows, WriteOutcomes
from transforms.output.state import commit_state, prepare_state
from transforms.output.tables import TABLE_STATS, TableFiles, WriteTables
from transforms.report.summary import OutputPaths, WriteReport


def summary_extras(reuse: dict, matched: tuple, reader: dict, content: dict, cells: dict,
                   tables: dict, content_counts: dict) -> dict:
    """The summary's figures besides the counts: reuse, archives, readers, content
    settings, bounded cells and the table writers' figures (one step: each side input
    of a step of its own costs a stage)."""
    return {
        **reuse, "archives": matched[1], **reader, **content, **cells, **content_counts,
        **{key: value for key, value in tables.items() if key not in ("rows", TABLE_STATS)},
    }


def build_pipeline(pipeline, inputs, options, paths: OutputPaths, started: float, progress=None):
    """Add the extraction to ``pipeline``; returns the PCollection holding the summary."""
    # Tag selection and de-identification (transforms/content/settings.py): the walker reads only
    # selected elements; each row is de-identified before it leaves extraction.
    content = ContentSettings.from_options(options)
    settings = FlattenSettings(
        include_private=content.reads_private(options.include_private),
        max_sequence_items=options.max_sequence_items,
        max_binary_bytes=options.max_binary_bytes,
        max_values=options.max_values,
        max_cell_chars=options.max_cell_chars,
        selection=content.selection or None,
    )
    limits = FileLimits(seconds=options.file_timeout, header_bytes=options.max_header_bytes)
    table_path = TablePath(content)  # DicomPath as the outputs show it
    # This run's state generation: rows are spilled into it and kept for the next run.
    # Rows whose DicomPath is a pseudonym cannot be matched to their files again.
    state = prepare_state(
        paths.table, paths.temp_dir, settings, options.incremental, content.fingerprint(),
        reusable=not table_path, read_archives=options.read_archives,
    )
    files = pipeline | "Discover" >> MatchInputs(inputs, progress)
    plan = files | "Reuse" >> PlanReuse(state, options.rows_per_shard, progress)
    extracted = (
        plan["extract"]
        | "Batch" >> BatchFiles()
        | "Extract" >> beam.ParDo(KeepFileMetadata(ExtractHeaders(
            settings, progress, limits=limits, content=RowContent(content),
            read_archives=options.read_archives,
        )))
        .with_outputs(ERRORS, SKIPPED, MANIFEST, READER_COUNTS, ARCHIVES, CONTENT_COUNTS,
                      main="rows")
    )
    # Zip and tar members: extracted like files, named ARCHIVE!/MEMBER.
    members = extracted[ARCHIVES] | "Archives" >> ReadArchives(
        settings, progress, limits=limits, content=RowContent(content)
    )
    # Rows are bounded and spilled in the stage that read them: a Flatten of the rows of
    # files and of archive members would make the runner hold every row between stages.
    file_rows = extracted.rows | "BoundCells" >> BoundCells(
        settings.max_values, settings.max_cell_chars
    )
    member_rows = members["rows"] | "BoundMemberCells" >> BoundCells(
        settings.max_values, settings.max_cell_chars
    )
    spilled = file_rows["rows"] | "Spill" >> beam.ParDo(
        SpillRows(state.generation, options.rows_per_shard)
    )
    spilled_members = member_rows["rows"] | "SpillMembers" >> beam.ParDo(
        SpillRows(state.generation, options.rows_per_shard)
    )
    shards = (spilled, spilled_members, plan["shards"]) | "AllShards" >> beam.Flatten()
    cell_counts = (
        (file_rows["bounded"], member_rows["bounded"])
        | "AllBounded" >> beam.Flatten()
        | "CellCounts" >> CountBoundedCells()
    )
    skipped = (
        extracted[SKIPPED],
        members[SKIPPED],
        plan["manifest"] | "ReusedSkips" >> beam.FlatMap(skip_records),
    ) | "AllSkipped" >> beam.Flatten()
    outcome_parts = (
        (extracted[MANIFEST], members[MANIFEST], plan["manifest"])
        | "AllOutcomes" >> beam.Flatten()
        | "OutcomePaths" >> PseudonymizeReportPaths(table_path, manifest=True)  # issue 24
        | "WriteOutcomes" >> beam.ParDo(WriteOutcomes(state.generation))
    )
    # Matched files, each archive counted as its members, and the number of archives.
    counted = (files, members[ARCHIVE_UNITS], plan["archive_units"]) | "Matched" >> CountMatched()
    matched = counted | "MatchedFiles" >> beam.Map(lambda pair: pair[0])
    columns = shards | "Columns" >> ComputeColumns()
    tables = (shards, columns) | "WriteTables" >> WriteTables(
        TableFiles(paths.table if "csv" in paths.formats else None,
                   paths.parquet if "parquet" in paths.formats else None),
        paths.temp_dir,
        csv_formula_guard=content.csv_formula_guard,
    )
    table_rows = tables | "TableRows" >> beam.Map(lambda figures: figures["rows"])
    reader_counts = extracted[READER_COUNTS] | "ReaderCounts" >> SumReaderCounts()
    # issue 24: originals replaced in kept free text (summary's free_text_replacements).
    content_counts = (
        (extracted[CONTENT_COUNTS], members[CONTENT_COUNTS])
        | "AllContentCounts" >> beam.Flatten()
        | "ContentCounts" >> SumContentCounts()
    )
    extra = plan["counts"] | "SummaryExtras" >> beam.Map(
        summary_extras,
        beam.pvalue.AsSingleton(counted), beam.pvalue.AsSingleton(reader_counts),
        content.summary(), beam.pvalue.AsSingleton(cell_counts),
        beam.pvalue.AsSingleton(tables),
        beam.pvalue.AsSingleton(content_counts),  # issue 24
    )
    errors = (
        (extracted[ERRORS], members[ERRORS])
        | "AllErrors" >> beam.Flatten()
        | "ErrorPaths" >> PseudonymizeReportPaths(table_path)
    )
    skipped = skipped | "SkippedPaths" >> PseudonymizeReportPaths(table_path)
    summary = (
        matched, table_rows, columns, errors, skipped, extra
    ) | "Report" >> WriteReport(paths, started)
    html = summary | "HtmlReport" >> WriteHtmlReport(paths, run_settings(options, inputs), tables)
    return (
        summary
        | "CommitState" >> beam.Map(
            commit_state, state, beam.pvalue.AsList(shards), beam.pvalue.AsList(outcome_parts),
            beam.pvalue.AsList(html),  # commit and clean up only once the page is written
        )
        | "Cleanup" >> beam.Map(cleanup, state, paths.temp_dir)
    )
