"""The report's table figures counted shard by shard, in parallel, for a run whose table
no step merges: ``-o FOLDER/ --format nested`` alone (``nested_parts.py`` writes the
parts in parallel, and there is no CSV, flat Parquet or JSON lines to merge).

Each row shard is read as the merge would read it (``tables.merge_shards`` of that one
shard, writing nothing) into its own ``TableStats``; the stats travel as data
(``TableStats.as_data``) and ``MergeTableStats`` adds them up in any order. Distinct
patients, studies and series are counted with a hash every worker agrees on
(``counters.DistinctCount(stable=True)``), so the sets merge exactly. The figures are
those of a single-file run over the same rows (``tests/test_nested_parts.py``).
"""

from __future__ import annotations

import apache_beam as beam

from transforms.output.table_stats import TableStats
from transforms.output.tables import TABLE_STATS, TableFiles, merge_shards


def shard_stats(shard, columns, files: TableFiles) -> dict:
    """One shard's figures (as data) over the table's ``columns``."""
    from transforms.inputs import storage

    storage.prepare_filesystems()
    stats = TableStats(stable_hashes=True)
    merge_shards([shard], columns, files, stats=stats)
    return stats.as_data()


class MergeTableStats(beam.CombineFn):
    """Shards' ``TableStats`` as data -> the table's, as data; empty when no shard."""

    def create_accumulator(self):
        return None

    def add_input(self, accumulator, data):
        return self.merge_accumulators([accumulator, data])

    def merge_accumulators(self, accumulators):
        merged = None
        for data in accumulators:
            if data is None:
                continue
            if merged is None:
                merged = TableStats.from_data(data)
            else:
                merged.merge(TableStats.from_data(data))
        return None if merged is None else merged.as_data()

    def extract_output(self, accumulator):
        return accumulator


def table_figures(data, columns, files: TableFiles) -> dict:
    """The figures ``WriteTables`` emits: ``rows`` and the report's ``TABLE_STATS``."""
    if data is None:  # no rows, no shards: the figures of an empty table
        stats = TableStats()
        merge_shards([], columns, files, stats=stats)
    else:
        stats = TableStats.from_data(data)
    return {"rows": stats.rows, TABLE_STATS: stats.as_dict()}


class CountTableFigures(beam.PTransform):
    """Row shards -> one dict of the table's figures, counted shard by shard."""

    def __init__(self, files: TableFiles, columns):
        super().__init__()
        self.files = files
        self.columns = columns  # the table's columns: a singleton PCollection

    def expand(self, shards):
        columns = beam.pvalue.AsSingleton(self.columns)
        return (shards
                | "ShardStats" >> beam.Map(shard_stats, columns, self.files)
                | "MergeStats" >> beam.CombineGlobally(MergeTableStats())
                | "Figures" >> beam.Map(table_figures, columns, self.files))
