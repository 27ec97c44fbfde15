"""Columns: the global, ordered set of columns that hold a value in at least one row.

Rows only carry non-empty values, so every column a shard saw is non-empty somewhere.
The order depends on the column names alone (``DicomPath`` first, then tag order,
nested columns right after their sequence), never on runner, workers or sharding.
"""

from __future__ import annotations

from typing import NamedTuple

import apache_beam as beam

from transforms.common.rows import JSON_COLUMN
from transforms.reading.naming import order_columns


class Column(NamedTuple):
    name: str
    vrs: frozenset  # every VR the column was read with; more than one widens types


class UnionColumns(beam.CombineFn):
    """Union of ``{column name: VRs}`` dicts."""

    def create_accumulator(self):
        return {}

    def add_input(self, accumulator, columns):
        for name, vrs in columns.items():
            seen = accumulator.get(name)
            accumulator[name] = vrs if seen is None else seen | vrs
        return accumulator

    def merge_accumulators(self, accumulators):
        merged = {}
        for accumulator in accumulators:
            self.add_input(merged, accumulator)
        return merged

    def extract_output(self, accumulator):
        names = order_columns(name for name in accumulator if name != JSON_COLUMN)
        return [Column(name, frozenset(accumulator[name])) for name in names]


class ComputeColumns(beam.PTransform):
    """Shards -> a single ordered list of ``Column``."""

    def expand(self, shards):
        return (
            shards
            | "ShardColumns" >> beam.Map(lambda shard: shard.columns)
            | "Union" >> beam.CombineGlobally(UnionColumns())
        )
