"""Series: the rows of the table grouped by series, in a combine whose memory per series
is bounded, whatever the number of files in the series.

Input: the row shards that reach the table writers (spilled or, with ``--incremental``,
carried over), read again one shard at a time (``SeriesParts``): so a series summary is
made of exactly the table's rows, and a run that reuses rows gives the same summary as
one that extracts them. Each shard gives one partial ``SeriesSummary`` per series it
holds; ``CombineSeries`` (a ``CombinePerKey``) merges the partials of a series.

Key: (Patient ID, Study Instance UID, Series Instance UID) as the table shows them (so
pseudonyms under ``--deidentify``). A file without a Series Instance UID is grouped with
the other such files of its patient and study, under an empty Series Instance UID.

What a summary holds, per series (all of it bounded):

* files, bytes (sum of file sizes), the smallest and largest ``DicomPath`` (their common
  prefix is the common prefix of every path of the series);
* per column: files with a value, the distinct values up to ``DISTINCT_CAP`` (then only
  "more"), and for single-valued numbers, dates and times the smallest and largest;
* Instance Number: the numbers as sorted disjoint ranges (a complete series is one
  range), up to ``RANGE_CAP`` ranges; beyond that only min, max and count are kept and
  missing/duplicate numbers are unknown;
* geometry: Image Orientation (Patient) when one for the whole series, and every
  file's Image Position (Patient) projected on its normal (mm, rounded to 0.1 µm), counted
  per position, up to ``POSITION_CAP`` distinct positions; beyond that, or when the
  orientation varies or a file has no position, no geometry (``GeometryNote`` says why).

Every merge is commutative and associative on these bounded values, so the result does
not depend on the runner, the bundles or the order of the shards.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import apache_beam as beam
import numpy as np
import pyarrow as pa

from transforms.output import shard_format
from transforms.output.types import FLOAT_VRS, INT_VRS, column_vm
from transforms.reading.flatten import public_name

PATIENT_ID = public_name(0x00100020)
STUDY_UID = public_name(0x0020000D)
SERIES_UID = public_name(0x0020000E)
INSTANCE_NUMBER = public_name(0x00200013)
IMAGE_POSITION = public_name(0x00200032)
IMAGE_ORIENTATION = public_name(0x00200037)
KEY_COLUMNS = (PATIENT_ID, STUDY_UID, SERIES_UID)

DISTINCT_CAP = 1000  # distinct values kept per column and series; beyond: "more than"
RANGE_CAP = 4096  # ranges of instance numbers kept per series
POSITION_CAP = 4096  # distinct slice positions kept per series
POSITION_DECIMALS = 4  # mm: positions equal to 0.1 µm are the same position
DATE_TIME_VRS = frozenset({"DA", "TM", "DT"})


def bound_kind(name: str, vrs) -> str | None:
    """How a column's smallest and largest values are compared: "number", "text" (dates
    and times, whose DICOM text sorts in time order) or None (no min/max)."""
    if not vrs or column_vm(name) != "1":
        return None
    if vrs <= INT_VRS | FLOAT_VRS:
        return "number"
    if vrs <= DATE_TIME_VRS and len(vrs) == 1:
        return "text"
    return None


def _number(text: str):
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


class ColumnSummary:
    """One column in one series: files with a value, distinct values (``None`` once more
    than ``DISTINCT_CAP``), and the smallest and largest value (``bound_kind``)."""

    __slots__ = ("count", "values", "low", "high")

    def __init__(self, count: int, values, low=None, high=None):
        self.count = count
        self.values = values
        self.low = low
        self.high = high

    def merge(self, other: "ColumnSummary") -> None:
        self.count += other.count
        if self.values is not None and other.values is not None:
            self.values = self.values | other.values
            if len(self.values) > DISTINCT_CAP:
                self.values = None
        else:
            self.values = None
        if other.low is not None and (self.low is None or other.low < self.low):
            self.low = other.low
        if other.high is not None and (self.high is None or other.high > self.high):
            self.high = other.high


class InstanceNumbers:
    """Instance numbers as sorted disjoint ranges ``[first, last]`` and a file count;
    ``ranges`` is None once more than ``RANGE_CAP`` ranges (then only min/max)."""

    __slots__ = ("files", "ranges", "low", "high")

    def __init__(self, numbers=()):
        numbers = sorted(numbers)
        self.files = len(numbers)
        self.low = numbers[0] if numbers else None
        self.high = numbers[-1] if numbers else None
        self.ranges = _union_ranges([(number, number) for number in numbers])

    def merge(self, other: "InstanceNumbers") -> None:
        self.files += other.files
        if self.ranges is None or other.ranges is None:
            self.ranges = None
        else:
            self.ranges = _union_ranges(sorted(self.ranges + other.ranges))
        if other.low is not None and (self.low is None or other.low < self.low):
            self.low = other.low
        if other.high is not None and (self.high is None or other.high > self.high):
            self.high = other.high

    def missing_and_duplicates(self) -> tuple[int | None, int | None]:
        if self.ranges is None or not self.files:
            return None, None
        covered = sum(last - first + 1 for first, last in self.ranges)
        return (self.high - self.low + 1) - covered, self.files - covered


def _union_ranges(ranges: list):
    """Sorted ranges -> their union as disjoint, non-adjacent ranges (None past the cap)."""
    union: list = []
    for first, last in ranges:
        if union and first <= union[-1][1] + 1:
            if last > union[-1][1]:
                union[-1] = (union[-1][0], last)
        else:
            union.append((first, last))
    return union if len(union) <= RANGE_CAP else None


class Geometry:
    """Slice positions along the normal of one orientation. ``note`` is set (and the
    positions dropped) when no geometry can be given."""

    __slots__ = ("orientation", "positions", "note")

    def __init__(self, orientation: str | None, positions: dict | None, note: str = ""):
        self.orientation = orientation
        self.positions = positions  # rounded position -> files
        self.note = note

    def merge(self, other: "Geometry") -> None:
        if not self.note and other.note:
            self.note = other.note
        elif not self.note and other.orientation != self.orientation:
            self.note = "orientation varies"
        if self.note:
            self.orientation = self.positions = None
            return
        for position, count in other.positions.items():
            self.positions[position] = self.positions.get(position, 0) + count
        if len(self.positions) > POSITION_CAP:
            self.note = f"more than {POSITION_CAP} slice positions"
            self.orientation = self.positions = None


# Notes, in the order they win when partials disagree: any note beats geometry.
NO_POSITION = "a file has no Image Position (Patient) or Orientation"


class SeriesSummary:
    """The partial or whole summary of one series (see the module docstring)."""

    __slots__ = ("files", "bytes", "first_path", "last_path", "columns", "instances",
                 "geometry")

    def __init__(self):
        self.files = 0
        self.bytes = 0
        self.first_path = None
        self.last_path = None
        self.columns: dict = {}
        self.instances = InstanceNumbers()
        self.geometry: Geometry | None = None

    def merge(self, other: "SeriesSummary") -> "SeriesSummary":
        self.files += other.files
        self.bytes += other.bytes
        if other.first_path is not None:
            if self.first_path is None or other.first_path < self.first_path:
                self.first_path = other.first_path
            if self.last_path is None or other.last_path > self.last_path:
                self.last_path = other.last_path
        for name, column in other.columns.items():
            mine = self.columns.get(name)
            if mine is None:
                self.columns[name] = column
            else:
                mine.merge(column)
        self.instances.merge(other.instances)
        if other.geometry is not None:
            if self.geometry is None:
                self.geometry = other.geometry
            else:
                self.geometry.merge(other.geometry)
        return self


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


class CombineSeries(beam.CombineFn):
    """Partial ``SeriesSummary``s of one series -> the series' summary."""

    def create_accumulator(self):
        return SeriesSummary()

    def add_input(self, accumulator, summary):
        return accumulator.merge(summary)

    def merge_accumulators(self, accumulators):
        accumulators = iter(accumulators)
        merged = next(accumulators)
        for accumulator in accumulators:
            merged.merge(accumulator)
        return merged

    def extract_output(self, accumulator):
        return accumulator


class SummarizeSeries(beam.PTransform):
    """Shards -> ``(series key, SeriesSummary)``, one per series of the table."""

    def expand(self, shards):
        return (
            shards
            | "Read" >> beam.ParDo(SeriesParts())
            | "Combine" >> beam.CombinePerKey(CombineSeries())
        )

