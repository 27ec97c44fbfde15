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
not depend on the runner, the bundles or the order of the shards. How summaries travel
and combine: ``series_packing.py``.
"""

from __future__ import annotations

import functools
import math
import re

from pydicom.datadict import dictionary_VR

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
_LAST_TAG = re.compile(r"\(([0-9A-F]{4}),([0-9A-F]{4})\)$")
KINDS = (None, "number", "text")  # bound kinds, as the low bits of a column number


@functools.lru_cache(maxsize=1 << 14)
def bound_kind(name: str | int) -> str | None:
    """How a column's smallest and largest values are compared: "number", "text" (dates
    and times, whose DICOM text sorts in time order) or None (no min/max). From the
    dictionary VR and VM of the column's (last) tag: single-valued public elements only.
    A column number (``column_numbers``) carries its kind."""
    if isinstance(name, int):
        return KINDS[name & 3]
    match = _LAST_TAG.search(name)
    if match is None or column_vm(name) != "1" or int(match.group(1), 16) % 2:
        return None
    try:
        vr = dictionary_VR(int(match.group(1) + match.group(2), 16))
    except KeyError:
        return None
    if vr in INT_VRS or vr in FLOAT_VRS:
        return "number"
    return "text" if vr in DATE_TIME_VRS else None


def _number(text: str):
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def value_bounds(kind: str | None, values) -> tuple:
    """The smallest and largest of ``values``: for numbers ``(value, text)`` pairs (the
    text as the files hold it), for dates and times their text; None without a kind."""
    if kind == "number":
        try:  # most often every text is a finite number: no call per value
            numbers = list(map(float, values))
            pairs = list(zip(numbers, values)) if all(map(math.isfinite, numbers)) else None
        except ValueError:
            pairs = None
        values = pairs if pairs is not None else [
            (number, text) for number, text in zip(map(_number, values), values)
            if number is not None]
    elif kind != "text":
        return None, None
    return (min(values), max(values)) if values else (None, None)


class ColumnSummary:
    """One column in one series: files with a value, distinct values (``None`` once more
    than ``DISTINCT_CAP``) and, for a column with a ``bound_kind``, the smallest and
    largest value of those no longer in ``values`` (so a value is parsed only when the
    set overflows, or once at the end: ``bounds``). Unpacked (``unpack``), the values are
    a tuple, and stay one until a merge needs the set: most columns are never merged."""

    __slots__ = ("count", "values", "kind", "low", "high")

    def __init__(self, count: int, values: frozenset, name: str = ""):
        self.count = count
        self.values = values
        self.kind = bound_kind(name)
        self.low = self.high = None
        if len(values) > DISTINCT_CAP:
            self._fold()

    def _fold(self) -> None:
        """Distinct values past the cap: keep only their bounds."""
        self._widen(*value_bounds(self.kind, self.values))
        self.values = None

    def _widen(self, low, high) -> None:
        if low is not None and (self.low is None or low < self.low):
            self.low = low
        if high is not None and (self.high is None or high > self.high):
            self.high = high

    def merge(self, other: "ColumnSummary") -> None:
        self.count += other.count
        self._widen(other.low, other.high)
        if other.values is None:
            if self.values is not None:
                self._fold()
            return
        if self.values is None:
            self._widen(*value_bounds(self.kind, other.values))
            return
        self.values = frozenset(self.values).union(other.values)  # either may be a tuple
        if len(self.values) > DISTINCT_CAP:
            self._fold()

    def bounds(self) -> tuple:
        """The smallest and largest value of the column in the series."""
        low, high = value_bounds(self.kind, self.values or ())
        if self.low is not None and (low is None or self.low < low):
            low = self.low
        if self.high is not None and (high is None or self.high > high):
            high = self.high
        return low, high


class InstanceNumbers:
    """Instance numbers as sorted disjoint ranges ``[first, last]`` and a file count;
    ``ranges`` is None once more than ``RANGE_CAP`` ranges (then only min/max)."""

    __slots__ = ("files", "ranges", "low", "high")

    def __init__(self, numbers=()):
        numbers = sorted(numbers)
        self.files = len(numbers)
        self.low = numbers[0] if numbers else None
        self.high = numbers[-1] if numbers else None
        self.ranges = _union_ranges(zip(numbers, numbers))

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


def _union_ranges(ranges):
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

    @classmethod
    def counted(cls, orientation: str, positions: dict) -> "Geometry":
        """The geometry of files at ``positions`` (position -> files) along the normal of
        ``orientation``; past ``POSITION_CAP`` positions, only the note."""
        geometry = cls(orientation, positions)
        geometry._cap()
        return geometry

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
        self._cap()

    def _cap(self) -> None:
        if len(self.positions) > POSITION_CAP:
            self.note = f"more than {POSITION_CAP} slice positions"
            self.orientation = self.positions = None


# Notes, in the order they win when partials disagree: any note beats geometry.
NO_POSITION = "a file has no Image Position (Patient) or Orientation"


class SeriesSummary:
    """The partial or whole summary of one series (see the module docstring). Columns:
    ``counts`` (files with a value), ``constant`` (the one value of a column that has
    had one so far) and ``varying`` (``ColumnSummary`` of the others): most columns of
    a series are constant, and plain dicts keep them cheap."""

    __slots__ = ("files", "bytes", "first_path", "last_path", "counts", "constant",
                 "varying", "instances", "geometry")

    def __init__(self):
        self.files = 0
        self.bytes = 0
        self.first_path = None
        self.last_path = None
        self.counts: dict = {}
        self.constant: dict = {}
        self.varying: dict = {}
        self.instances = InstanceNumbers()
        self.geometry: Geometry | None = None

    def column(self, name: str) -> ColumnSummary | None:
        """The column as a ``ColumnSummary`` (None if no file of the series has it)."""
        if name in self.varying:
            return self.varying[name]
        if name in self.constant:
            return ColumnSummary(self.counts[name], frozenset((self.constant[name],)), name)
        return None

    def merge(self, other: "SeriesSummary") -> "SeriesSummary":
        if not self.files:  # an empty accumulator takes the other's columns as they are
            self.counts, self.constant, self.varying = (
                other.counts, other.constant, other.varying)
        else:
            self._merge_columns(other)
        self.files += other.files
        self.bytes += other.bytes
        if other.first_path is not None:
            if self.first_path is None or other.first_path < self.first_path:
                self.first_path = other.first_path
            if self.last_path is None or other.last_path > self.last_path:
                self.last_path = other.last_path
        self.instances.merge(other.instances)
        if other.geometry is not None:
            if self.geometry is None:
                self.geometry = other.geometry
            else:
                self.geometry.merge(other.geometry)
        return self

    def _merge_columns(self, other: "SeriesSummary") -> None:
        counts, constant, varying = self.counts, self.constant, self.varying
        for name, count in other.counts.items():
            counts[name] = counts.get(name, 0) + count
        for name, value in other.constant.items():
            if name in varying:
                varying[name].merge(ColumnSummary(0, frozenset((value,)), name))
            elif name in constant and constant[name] != value:
                varying[name] = ColumnSummary(0, frozenset((constant.pop(name), value)), name)
            elif name not in constant:
                constant[name] = value
        for name, column in other.varying.items():
            if name in varying:
                varying[name].merge(column)
            else:
                mine = constant.pop(name, None)
                varying[name] = column
                if mine is not None:
                    column.merge(ColumnSummary(0, frozenset((mine,)), name))
        for name, column in varying.items():
            column.count = counts[name]


def column_numbers(columns) -> dict:
    """``{name: number}`` for the table's columns: packed summaries name a column by its
    place in the table times four plus its bound kind (``KINDS``), so that merges
    still know how to bound it, and the writer, which has the columns, its name
    (``series_records.series_record``)."""
    return {column.name: place * 4 + KINDS.index(bound_kind(column.name))
            for place, column in enumerate(columns)}
