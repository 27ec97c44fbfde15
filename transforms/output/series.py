"""Series: the rows of the table grouped by series, in a combine whose memory per series
is bounded, whatever the number of files in the series.

Input: the row shards that reach the table writers (spilled or, with ``--incremental``,
carried over), read again one shard at a time (``series_shards.SeriesParts``): so a
series summary is made of exactly the table's rows, and a run that reuses rows gives the
same summary as one that extracts them. Each shard gives one partial ``SeriesSummary`` per series it
holds; ``CombineSeries`` (a ``CombinePerKey``) merges the partials of a series.

Key: (Patient ID, Study Instance UID, Series Instance UID) as the table shows them (so
pseudonyms under ``--deidentify``); a key that a tag selection leaves out is read anyway
and stored as a grouping cell (``rows.GROUPING_PREFIX``), which the table never shows. A file without a Series Instance UID is grouped with
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

import apache_beam as beam

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
