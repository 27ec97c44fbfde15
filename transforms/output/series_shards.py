"""Series from row shards: each shard read once, one partial ``SeriesSummary`` per series
it holds (``series.py`` says what a summary holds and how partials merge).

Per batch of a shard, the work per cell is Arrow's (a group-by of the cells by series and
column, counting them and listing their distinct values); Python runs once per row (its
series key, instance number and position) and once per distinct value of a column in a
series. Rows are the shard's as the table shows them, so the series tables hold what the
file table holds (pseudonyms under ``--deidentify``).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import apache_beam as beam
import numpy as np
import pyarrow as pa

from transforms.common.rows import grouping_name
from transforms.output import shard_format
from transforms.output.series import (
    DISTINCT_CAP, IMAGE_ORIENTATION, IMAGE_POSITION, INSTANCE_NUMBER, KEY_COLUMNS,
    NO_POSITION, POSITION_DECIMALS, ColumnSummary, CombineSeries, Geometry, InstanceNumbers,
    SeriesSummary, bound_kind,
)

def _number(text: str):
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _normal(orientation: str):
    try:
        values = [float(item) for item in orientation.split("\\")]
    except ValueError:
        return None
    if len(values) != 6:
        return None
    normal = np.cross(values[:3], values[3:])
    length = float(np.linalg.norm(normal))
    return normal / length if length > 1e-6 else None


def _position(text: str | None, normal) -> float | None:
    if text is None or normal is None:
        return None
    try:
        values = [float(item) for item in text.split("\\")]
    except ValueError:
        return None
    if len(values) != 3:
        return None
    return round(float(np.dot(values, normal)), POSITION_DECIMALS) + 0.0  # no -0.0


def _geometry(orientations: list, positions: list) -> Geometry:
    """One partial's geometry from its files' orientation and position texts."""
    distinct = set(orientations)
    if None in distinct:
        return Geometry(None, None, NO_POSITION)
    if len(distinct) > 1:
        return Geometry(None, None, "orientation varies")
    orientation = distinct.pop()
    normal = _normal(orientation)
    counted: dict = {}
    for text in positions:
        position = _position(text, normal)
        if position is None:
            return Geometry(None, None, NO_POSITION)
        counted[position] = counted.get(position, 0) + 1
    geometry = Geometry(orientation, {})
    geometry.merge(Geometry(orientation, counted))
    return geometry


def _instance_number(text: str | None):
    if text is None:
        return None
    try:
        return int(text.strip())
    except ValueError:
        return None


class _ShardColumns(NamedTuple):
    names: list  # column number -> name
    name_of_key: np.ndarray  # shard key number -> column number
    kinds: list  # column number -> bound_kind


def _shard_columns(keys: list) -> _ShardColumns:
    vrs: dict = {}
    for name, vr in keys:
        vrs.setdefault(name, set())
        if vr:
            vrs[name].add(vr)
    names = list(vrs)
    number = {name: index for index, name in enumerate(names)}
    return _ShardColumns(
        names, np.array([number[name] for name, _ in keys] or [0], np.int32),
        [bound_kind(name, frozenset(vrs[name])) for name in names],
    )


def _bounds(kind: str | None, values: list) -> tuple:
    if kind == "number":  # (value, text): the text as the files hold it
        numbers = [(number, text) for number, text in zip(map(_number, values), values)
                   if number is not None]
        return (min(numbers), max(numbers)) if numbers else (None, None)
    if kind == "text":
        return min(values), max(values)
    return None, None


def batch_summaries(cells: shard_format.CellRows, columns: _ShardColumns) -> dict:
    """``{series key: SeriesSummary}`` of one batch of a shard's rows."""
    rows = len(cells.paths)
    column_of_cell = columns.name_of_key[cells.keys] if len(cells.keys) else \
        np.zeros(0, np.int32)
    row_of_cell = np.repeat(np.arange(rows), np.diff(cells.offsets))

    def per_row(name: str) -> list:
        found = [None] * rows
        if name not in columns.names:
            name = grouping_name(name)  # a key the tag selection leaves out
        if name in columns.names:
            mask = column_of_cell == columns.names.index(name)
            texts = cells.values.filter(pa.array(mask)).to_pylist()
            for row, value in zip(row_of_cell[mask].tolist(), texts):
                found[row] = value
        return found

    keys = list(zip(*(per_row(name) for name in KEY_COLUMNS)))
    group_of: dict = {}
    group_of_row = np.array([group_of.setdefault(tuple(part or "" for part in key), len(group_of))
                             for key in keys], np.int64)
    summaries = [SeriesSummary() for _ in group_of]
    instances, orientations, positions = (
        per_row(INSTANCE_NUMBER), per_row(IMAGE_ORIENTATION), per_row(IMAGE_POSITION))
    members: list = [[] for _ in group_of]
    for row, group in enumerate(group_of_row.tolist()):
        members[group].append(row)
    for summary, rows_of_group in zip(summaries, members):
        paths = [cells.paths[row] for row in rows_of_group]
        summary.files = len(rows_of_group)
        summary.bytes = sum(cells.sizes[row] or 0 for row in rows_of_group)
        summary.first_path, summary.last_path = min(paths), max(paths)
        numbers = [number for number in (_instance_number(instances[row])
                                         for row in rows_of_group) if number is not None]
        summary.instances = InstanceNumbers(numbers)
        if any(positions[row] is not None for row in rows_of_group) or \
                any(orientations[row] is not None for row in rows_of_group):
            summary.geometry = _geometry([orientations[row] for row in rows_of_group],
                                         [positions[row] for row in rows_of_group])
    # Every (series, column): files with a value and its distinct values, in Arrow.
    width = max(1, len(columns.names))
    table = pa.table({
        "pair": pa.array(group_of_row[row_of_cell] * width + column_of_cell),
        "value": cells.values,
    })
    grouped = table.group_by("pair").aggregate([("value", "count"), ("value", "distinct")])
    pairs = grouped.column("pair").to_numpy().tolist()
    counts = grouped.column("value_count").to_pylist()
    for pair, count, values in zip(pairs, counts, grouped.column("value_distinct").to_pylist()):
        group, column = divmod(pair, width)
        low, high = _bounds(columns.kinds[column], values)
        distinct = frozenset(values) if len(values) <= DISTINCT_CAP else None
        summaries[group].columns[columns.names[column]] = ColumnSummary(
            count, distinct, low, high)
    return {key: summary for key, summary in zip(group_of, summaries)}


def shard_summaries(path: str, size: int | None = None) -> dict:
    """``{series key: SeriesSummary}`` of every row of one shard."""
    merged: dict = {}
    with shard_format.open_stream(path, size) as stream:
        parquet = shard_format.open_shard(stream, path)
        _, keys = shard_format.check_keys(parquet.metadata.metadata, path)
        columns = _shard_columns(keys)
        for batch in parquet.iter_batches(batch_size=shard_format.ROW_GROUP_ROWS,
                                          use_threads=False):
            cells = shard_format.batch_cell_rows(batch)
            for key, summary in batch_summaries(cells, columns).items():
                if key in merged:
                    merged[key].merge(summary)
                else:
                    merged[key] = summary
    return merged


class SeriesParts(beam.DoFn):
    """``ShardInfo`` -> ``(series key, SeriesSummary)`` for each series in the shard."""

    def setup(self):
        from transforms.inputs import storage

        storage.prepare_filesystems()

    def process(self, shard):
        yield from shard_summaries(shard.path, shard.size).items()


class SummarizeSeries(beam.PTransform):
    """Shards -> ``(series key, SeriesSummary)``, one per series of the table."""

    def expand(self, shards):
        return (
            shards
            | "Read" >> beam.ParDo(SeriesParts())
            | "Combine" >> beam.CombinePerKey(CombineSeries())
        )
