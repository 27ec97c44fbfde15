"""How series summaries travel between workers and combine: ``pack`` makes one ``bytes``
value of a ``SeriesSummary`` (its plain data, encoded by Beam's coder for primitive
values, never a pickle, then compressed with Arrow's LZ4), ``unpack`` reads it back, and
``CombineSeries``, a ``CombineFn`` for ``CombinePerKey``, merges the partials of one
series (``series.py`` says what a summary holds and why every merge is order-free).
Each combined summary then becomes its series' row (``series_rows.py``).
"""

from __future__ import annotations

import struct

import apache_beam as beam
import pyarrow as pa
from apache_beam import coders

from transforms.output.series import ColumnSummary, Geometry, SeriesSummary


class _NoPickle(coders.Coder):
    """The fallback of ``PLAIN_DATA``: refuses what is not plain data instead of
    pickling it (the project keeps no pickle in what it moves or stores)."""

    def encode(self, value):
        raise TypeError(f"a series summary holds {type(value).__name__}: not plain data")

    def decode(self, encoded):
        raise TypeError("a series summary holds something that is not plain data")

    def is_deterministic(self):
        return True


# Beam's own coder for lists, tuples, numbers, strings and None, used directly: a packed
# summary is one ``bytes`` value, so the runner moves it as it is. Given the summaries'
# structure instead, the local runner decodes and re-encodes every one in its grouping
# step, and sizes each side-input element object by object for its cache: for the
# 50,000-file benchmark archive, 60 MB of small strings and lists, several times over.
PLAIN_DATA = coders.FastPrimitivesCoder(fallback_coder=_NoPickle())
# Then compressed: the local runner's own process decodes and encodes every summary for
# the combine's grouping and again for the writer's side input, at a cost per byte. On
# the 50,000-file benchmark archive, 57.6 MB of summaries become 22.7 MB (a series'
# columns repeat names and values), and that process's CPU in the series stages falls
# from 0.96 to 0.36 s (benchmarks/README.md). The plain data's length, then an LZ4 frame.
_LENGTH = struct.Struct("<Q")
CODEC = "lz4"


def compress(data: bytes) -> bytes:
    return _LENGTH.pack(len(data)) + pa.compress(data, codec=CODEC, asbytes=True)


def decompress(packed: bytes) -> bytes:
    (length,) = _LENGTH.unpack_from(packed)
    return pa.decompress(memoryview(packed)[_LENGTH.size:], decompressed_size=length,
                         codec=CODEC, asbytes=True)


def pack(summary: SeriesSummary) -> bytes:
    """A summary as the runner moves it: its plain data (lists, numbers and strings; no
    pickle, no per-object state) encoded once by ``PLAIN_DATA``, compressed. Most of it is
    column names (numbers, once ``series_shards`` numbers them by ``column_numbers``)
    and values."""
    return compress(PLAIN_DATA.encode(_as_data(summary)))


def unpack(summary) -> SeriesSummary:
    """A ``SeriesSummary`` from itself or its ``pack``."""
    if isinstance(summary, SeriesSummary):
        return summary
    return _from_data(PLAIN_DATA.decode(decompress(summary)))


def _as_data(summary: SeriesSummary) -> list:
    """Plain lists, numbers and strings. A dict is its keys and its values as two flat
    lists (keys may be numbers), not a list of pairs: a pair per cell would be an object
    more to encode and to make again on every decode."""
    numbers, geometry = summary.instances, summary.geometry
    counts, constant = summary.counts, summary.constant
    return [
        summary.files, summary.bytes, summary.first_path, summary.last_path,
        list(counts), list(counts.values()), list(constant), list(constant.values()),
        [[name, column.count, None if column.values is None else list(column.values),
          column.kind, column.low, column.high] for name, column in summary.varying.items()],
        [numbers.files, numbers.ranges, numbers.low, numbers.high],
        None if geometry is None else [
            geometry.orientation, None if geometry.positions is None
            else [list(geometry.positions), list(geometry.positions.values())],
            geometry.note],
    ]


def _pair(value):  # a number's bound, (number, text), may come back as a list
    return tuple(value) if isinstance(value, list) else value


def _from_data(data: list) -> SeriesSummary:
    summary = SeriesSummary()
    (summary.files, summary.bytes, summary.first_path, summary.last_path, count_names,
     counts, constant_names, constant, varying, numbers, geometry) = data
    summary.counts = dict(zip(count_names, counts))
    summary.constant = dict(zip(constant_names, constant))
    for name, count, values, kind, low, high in varying:
        column = ColumnSummary.__new__(ColumnSummary)
        column.count, column.kind = count, kind
        column.values = None if values is None else tuple(values)
        column.low, column.high = _pair(low), _pair(high)
        summary.varying[name] = column
    instances = summary.instances
    instances.files, ranges, instances.low, instances.high = numbers
    instances.ranges = None if ranges is None else [tuple(pair) for pair in ranges]
    if geometry is not None:
        orientation, positions, note = geometry
        summary.geometry = Geometry(orientation, None if positions is None
                                    else dict(zip(*positions)), note)
    return summary


class CombineSeries(beam.CombineFn):
    """Partial summaries of one series (``SeriesSummary`` or their ``pack``) -> the
    series' summary, packed. A series found in one shard only (most are) is passed on
    packed, never decoded; partials are decoded only to be merged."""

    def create_accumulator(self):
        return SeriesSummary()

    def get_accumulator_coder(self):
        return SummaryCoder()

    def add_input(self, accumulator, summary):
        return self.merge_accumulators([accumulator, summary])

    def merge_accumulators(self, accumulators):
        found = [accumulator for accumulator in accumulators
                 if not (isinstance(accumulator, SeriesSummary) and not accumulator.files)]
        if not found:
            return SeriesSummary()
        if len(found) == 1:
            return found[0]
        merged = unpack(found[0])
        for accumulator in found[1:]:
            merged.merge(unpack(accumulator))
        return merged

    def compact(self, accumulator):
        if isinstance(accumulator, SeriesSummary) and accumulator.files:
            return pack(accumulator)
        return accumulator

    def extract_output(self, accumulator):
        return self.compact(accumulator)


class SummaryCoder(coders.Coder):
    """``CombineSeries``' accumulators, a ``SeriesSummary`` or its ``pack``, as their
    packed bytes (decoded: the bytes, which ``unpack`` reads when a merge needs them)."""

    def encode(self, value):
        return value if isinstance(value, bytes) else pack(value)

    def decode(self, encoded):
        return encoded

    def is_deterministic(self):
        return True
