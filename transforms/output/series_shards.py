"""Series from row shards: each shard read once, one partial ``SeriesSummary`` per series
it holds (``series.py`` says what a summary holds and how partials merge).

Per batch of a shard, the work per cell is Arrow's (a group-by of the cells by series and
column, counting them and their distinct values); Python runs once per row (its series
key, instance number and position), once per (series, column), and once per distinct
value of a column that varies in the series. Rows are the shard's as the table shows them, so the series tables hold what the
file table holds (pseudonyms under ``--deidentify``).
"""

from __future__ import annotations

import collections
import functools
import itertools
from typing import NamedTuple

import apache_beam as beam
import numpy as np
import pyarrow.compute as pc

from transforms.common.rows import JSON_COLUMN, grouping_name
from transforms.output import shard_format
from transforms.output.table_chunks import without_keys
from transforms.output.series import (
    IMAGE_ORIENTATION, IMAGE_POSITION, INSTANCE_NUMBER, KEY_COLUMNS, NO_POSITION,
    POSITION_DECIMALS, ColumnSummary, Geometry, InstanceNumbers, SeriesSummary,
    column_numbers,
)
from transforms.output.series_packing import CombineSeries, pack

# Rows summarised at once (a shard holds --rows-per-shard rows, 5,000 by default): the
# fewer batches a series spans, the fewer (series, column) pairs Python sees.
BATCH_ROWS = 8192


@functools.lru_cache(maxsize=256)
def _normal(orientation: str):
    """The unit normal of an Image Orientation (Patient) text, as three floats (None when
    it is not six numbers or its rows are parallel). Cached: a site's series share a few
    orientations."""
    try:
        values = [float(item) for item in orientation.split("\\")]
    except ValueError:
        return None
    if len(values) != 6:
        return None
    normal = np.cross(values[:3], values[3:])
    length = float(np.linalg.norm(normal))
    return tuple((normal / length).tolist()) if length > 1e-6 else None


def _positions(texts: list, normal) -> list | None:
    """Each Image Position (Patient) text projected on ``normal`` (mm, rounded to
    ``POSITION_DECIMALS``), or None when a file has no position (not three numbers).
    All of a partial's files at once: ``x * nx + y * ny + z * nz`` in that order, with
    numpy's elementwise products and sums, IEEE doubles as Python's own arithmetic gives
    them, the same on every machine (a BLAS dot product may fuse or reorder its sums)."""
    if normal is None or None in texts:
        return None
    try:
        parts = [text.split("\\") for text in texts]
        if any(len(items) != 3 for items in parts):
            return None
        xyz = np.array(list(map(float, itertools.chain.from_iterable(parts)))).reshape(-1, 3)
    except ValueError:
        return None
    with np.errstate(all="ignore"):  # inf * 0 is nan, quietly, as in Python's floats
        projected = xyz[:, 0] * normal[0] + xyz[:, 1] * normal[1] + xyz[:, 2] * normal[2]
    return [round(value, POSITION_DECIMALS) + 0.0 for value in projected.tolist()]  # no -0.0


def _geometry(orientations: list, positions: list) -> Geometry:
    """One partial's geometry from its files' orientation and position texts."""
    distinct = set(orientations)
    if None in distinct:
        return Geometry(None, None, NO_POSITION)
    if len(distinct) > 1:
        return Geometry(None, None, "orientation varies")
    orientation = distinct.pop()
    projected = _positions(positions, _normal(orientation))
    if projected is None:
        return Geometry(None, None, NO_POSITION)
    # position -> files, in file order
    return Geometry.counted(orientation, dict(collections.Counter(projected)))


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
    labels: list  # column number -> what the summaries call it: its name or table number


def _shard_columns(keys: list, numbers: dict | None = None) -> _ShardColumns:
    names = list(dict.fromkeys(name for name, _ in keys))
    number = {name: index for index, name in enumerate(names)}
    labels = [numbers.get(name, name) for name in names] if numbers else names
    return _ShardColumns(names, np.array([number[name] for name, _ in keys] or [0], np.int32),
                         labels)


class _Cells:
    """One batch's cells as dictionary codes: each distinct text once, whatever its column."""

    def __init__(self, cells: shard_format.CellRows, columns: _ShardColumns):
        self.rows = len(cells.paths)
        encoded = pc.dictionary_encode(cells.values)
        self.codes = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)
        self.texts = encoded.dictionary
        self.column = columns.name_of_key[cells.keys] if len(cells.keys) else \
            np.zeros(0, np.int64)
        self.row = np.repeat(np.arange(self.rows), np.diff(cells.offsets))
        self.numbers = {name: number for number, name in enumerate(columns.names)}
        self._python = None

    def text(self, codes: np.ndarray) -> list:
        if not len(codes):
            return []
        if self._python is None:  # every distinct text as a Python str, made once
            self._python = self.texts.to_numpy(zero_copy_only=False)
        return self._python[codes].tolist()

    def per_row(self, name: str) -> np.ndarray:
        """Each row's code in column ``name`` (a key the tag selection leaves out: its
        grouping cell), -1 where the row has none."""
        found = np.full(self.rows, -1, np.int64)
        number = self.numbers.get(name, self.numbers.get(grouping_name(name)))
        if number is not None:
            mask = self.column == number
            found[self.row[mask]] = self.codes[mask]
        return found

    def decoded(self, codes: np.ndarray) -> dict:
        """``{code: text}`` of the distinct codes in ``codes`` (-1: None)."""
        distinct = np.unique(codes)
        present = distinct[distinct >= 0]
        found = dict(zip(present.tolist(), self.text(present)))
        found[-1] = None
        return found


def _group_rows(cells: _Cells) -> tuple[list, np.ndarray]:
    """The batch's series keys, and each row's group (an index into them), the keys in
    the order of their (patient, study, series) codes. Each key column's codes become
    their ranks, and the three ranks one number (each below the batch's rows), so one
    sort of integers finds the keys: ``np.unique(axis=0)`` sorts rows as records."""
    codes = np.stack([cells.per_row(name) for name in KEY_COLUMNS], axis=1)
    combined = np.zeros(len(codes), np.int64)
    for column in codes.T:
        distinct, rank = np.unique(column, return_inverse=True)
        combined = combined * len(distinct) + rank.reshape(-1)
    _, first, group_of_row = np.unique(combined, return_index=True, return_inverse=True)
    distinct = codes[first]
    decoded = cells.decoded(distinct.reshape(-1))
    keys = [tuple(decoded[code] or "" for code in key) for key in distinct.tolist()]
    return keys, group_of_row.reshape(-1)


def _per_file(summary: SeriesSummary, rows: np.ndarray, cells: shard_format.CellRows,
              instance: list, orientation: list, position: list) -> None:
    """A series' figures from its files (``rows`` of the batch)."""
    indices = rows.tolist()
    paths = [cells.paths[row] for row in indices]
    summary.files = len(indices)
    summary.bytes = sum(cells.sizes[row] or 0 for row in indices)
    summary.first_path, summary.last_path = min(paths), max(paths)
    summary.instances = InstanceNumbers(
        [instance[row] for row in indices if instance[row] is not None])
    orientations = [orientation[row] for row in indices]
    positions = [position[row] for row in indices]
    if any(text is not None for text in positions) or \
            any(text is not None for text in orientations):
        summary.geometry = _geometry(orientations, positions)


def batch_summaries(cells: shard_format.CellRows, columns: _ShardColumns) -> dict:
    """``{series key: SeriesSummary}`` of one batch of a shard's rows."""
    coded = _Cells(cells, columns)
    keys, group_of_row = _group_rows(coded)
    summaries = [SeriesSummary() for _ in keys]
    # Instance number, orientation and position texts per row, each distinct text
    # decoded (and an instance number parsed) once.
    per_file = []
    for name, convert in ((INSTANCE_NUMBER, _instance_number), (IMAGE_ORIENTATION, None),
                          (IMAGE_POSITION, None)):
        codes = coded.per_row(name)
        decoded = coded.decoded(codes)
        if convert is not None:
            decoded = {code: convert(text) for code, text in decoded.items()}
        per_file.append([decoded[code] for code in codes.tolist()])
    order = np.argsort(group_of_row, kind="stable")
    starts = np.searchsorted(group_of_row[order], np.arange(len(keys) + 1))
    for group, summary in enumerate(summaries):
        _per_file(summary, order[starts[group]:starts[group + 1]], cells, *per_file)
    # Every (series, column, value) once, counted: numpy sorts the codes; per series,
    # the constant columns become dicts in C loops, and Python sees the distinct values
    # of the columns that vary.
    width = max(1, len(columns.names))
    vocabulary = max(1, len(coded.texts))
    triples, files = np.unique(group_of_row[coded.row] * width * vocabulary
                               + coded.column * vocabulary + coded.codes, return_counts=True)
    pairs, codes = np.divmod(triples, vocabulary)
    first = np.flatnonzero(np.r_[True, pairs[1:] != pairs[:-1]]) if len(pairs) else \
        np.zeros(0, np.int64)
    ends = np.r_[first[1:], len(pairs)].astype(np.int64)
    group_of_pair, column_of_pair = np.divmod(pairs[first], width)
    names = np.array(columns.labels + [""], dtype=object)
    counts = np.add.reduceat(files, first) if len(first) else files
    constant = ends - first == 1
    per_group = np.searchsorted(group_of_pair, np.arange(len(keys) + 1))
    per_constant = np.searchsorted(group_of_pair[constant], np.arange(len(keys) + 1))
    pair_names = names[column_of_pair].tolist()
    constant_names = names[column_of_pair[constant]].tolist()
    constant_values = coded.text(codes[first[constant]])
    counted = counts.tolist()
    for group, summary in enumerate(summaries):
        a, b = per_group[group], per_group[group + 1]
        summary.counts = dict(zip(pair_names[a:b], counted[a:b]))
        a, b = per_constant[group], per_constant[group + 1]
        summary.constant = dict(zip(constant_names[a:b], constant_values[a:b]))
    varying = np.flatnonzero(~constant)
    if len(varying):
        starts, stops = first[varying], ends[varying]
        texts = coded.text(np.concatenate([codes[a:b] for a, b in zip(starts, stops)]))
        at = 0
        for index, size in zip(varying.tolist(), (stops - starts).tolist()):
            name = pair_names[index]
            summaries[group_of_pair[index]].varying[name] = ColumnSummary(
                counted[index], tuple(texts[at:at + size]), name)  # distinct codes
            at += size
    return dict(zip(keys, summaries))


def shard_summaries(path: str, size: int | None = None, numbers: dict | None = None) -> dict:
    """``{series key: SeriesSummary}`` of every row of one shard; ``numbers``: the
    table's ``series.column_numbers``, to name the columns by (else by their names)."""
    merged: dict = {}
    with shard_format.open_stream(path, size) as stream:
        parquet = shard_format.open_shard(stream, path)
        _, keys = shard_format.check_keys(parquet.metadata.metadata, path)
        columns = _shard_columns(keys, numbers)
        # The DICOM JSON (--format json/nested) is no column of the series tables: its
        # cells, the largest of a row by far, are left out before they are summarized.
        dropped = np.array([column == JSON_COLUMN for column, _ in keys] or [False])
        for batch in parquet.iter_batches(batch_size=BATCH_ROWS, use_threads=False):
            cells = shard_format.batch_cell_rows(batch)
            if dropped.any():
                cells = without_keys(cells, dropped)
            for key, summary in batch_summaries(cells, columns).items():
                if key in merged:
                    merged[key].merge(summary)
                else:
                    merged[key] = summary
    return merged


class SeriesParts(beam.DoFn):
    """``ShardInfo``, the table's columns -> ``(series key, packed SeriesSummary)`` for
    each series in the shard, its columns numbered (``series.column_numbers``)."""

    def setup(self):
        from transforms.inputs import storage

        storage.prepare_filesystems()
        self._columns = self._numbers = None

    def process(self, shard, columns):
        if columns is not self._columns:  # the table's columns, as a side input
            self._columns, self._numbers = columns, column_numbers(columns)
        for key, summary in shard_summaries(shard.path, shard.size, self._numbers).items():
            yield key, pack(summary)


class SummarizeSeries(beam.PTransform):
    """Shards -> ``(series key, packed SeriesSummary)``, one per series of the table;
    ``columns``: the table's columns (one list)."""

    def __init__(self, columns):
        super().__init__()
        self.columns = columns

    def expand(self, shards):
        return (
            shards
            | "Read" >> beam.ParDo(SeriesParts(), beam.pvalue.AsSingleton(self.columns))
            | "Combine" >> beam.CombinePerKey(CombineSeries())
        )
