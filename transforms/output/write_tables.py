"""``WriteTables``: the row shards -> every table file of the run, each written by the
steps that fit its format, and one dict of their figures once all are in place.

* CSV and JSON lines (``scan.csv``, ``scan.jsonl``): text whose rows concatenate, so
  written in parts in parallel and joined (``table_parts.py``).
* Flat Parquet (``scan.parquet``): one merge on one worker (``tables.merge_step``); a
  Parquet file's row groups and footer cannot be joined from files written apart.
* Nested Parquet (``scan.nested.parquet``): converted shard by shard, merged by one step
  (``nested_file.py``).

The report's table figures (``tables.TABLE_STATS``) describe the CSV when there is one,
else the typed Parquet (where a value that does not parse is null, so not filled), else
the rows as the JSON lines' parts or the shards hold them (``shard_stats.py``).
``tables.finalize_step`` renames every file into place, in one step, after all are written.
"""

from __future__ import annotations

import apache_beam as beam

from transforms.common.tags import COLUMNS, TABLE_FIGURES
from transforms.output.columns import ComputeColumns
from transforms.output.nested_file import WriteNestedFile
from transforms.output.shard_stats import CountTableFigures
from transforms.output.table_parts import WriteTextParts
from transforms.output.tables import TableFiles, finalize_step, merge_step


class WriteTables(beam.PTransform):
    """Row shards -> {COLUMNS: the table's columns, TABLE_FIGURES: one dict of figures
    (``rows``, ``json_rows``, ``parquet_*``, ``nested_*``, the report's
    ``TABLE_STATS``), emitted once the tables are in place}."""

    def __init__(self, final: TableFiles, temp_dir: str, csv_formula_guard: bool = False):
        super().__init__()
        self.final = final
        self.temp_dir = temp_dir
        self.csv_formula_guard = csv_formula_guard

    def expand(self, shards):
        final = self.final
        columns = shards | "Columns" >> ComputeColumns()
        stats_from_parquet = bool(final.parquet) and not final.csv
        written = []
        if final.csv or final.jsonl:
            written.append(shards | "TextParts" >> WriteTextParts(
                TableFiles(final.csv, None, final.naming, final.jsonl), self.temp_dir,
                columns, self.csv_formula_guard, with_stats=not stats_from_parquet))
        if final.parquet:
            written.append(
                shards.pipeline
                | "Once" >> beam.Create([None])
                | "Merge" >> beam.Map(merge_step, beam.pvalue.AsList(shards),
                                      beam.pvalue.AsSingleton(columns),
                                      TableFiles(None, final.parquet, final.naming),
                                      self.temp_dir, with_stats=stats_from_parquet))
        if final.nested:
            written.append(shards | "NestedFile" >> WriteNestedFile(final.nested,
                                                                    self.temp_dir))
        if not (final.csv or final.jsonl or final.parquet):
            written.append(shards | "TableFigures" >> CountTableFigures(
                TableFiles(None, None, final.naming), columns))
        first, *more = written
        figures = first | "Finalize" >> beam.Map(
            finalize_step, *(beam.pvalue.AsSingleton(each) for each in more))
        return {COLUMNS: columns, TABLE_FIGURES: figures}
