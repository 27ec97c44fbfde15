"""Table statistics for the HTML report, computed in one streaming pass over the written table.

The table is read batch by batch (``pyarrow.csv.open_csv`` with every column as a string,
or ``ParquetFile.iter_batches`` when only Parquet is written), never whole. Memory is
bounded whatever the number of rows:

* fill counts: one integer per column;
* distributions (modality, SOP class, ...): a counter per value, at most ``KEPT_VALUES``
  distinct values per distribution. Beyond that the least frequent half is folded into an
  "other values" count and the distribution is flagged approximate (archives have tens of
  modalities and scanner models, so in practice every count is exact);
* patients, studies and series: each distinct value is hashed to 64 bits and kept in a
  sorted numpy array (8 bytes per distinct value, exact but for 64-bit hash collisions:
  odds ~1e-7 at two million values). Past ``EXACT_DISTINCT`` values the set becomes a
  HyperLogLog sketch of 2^14 one-byte registers (standard error 0.8 %), and the count is
  flagged as an estimate.

So the figures cost O(columns + KEPT_VALUES + EXACT_DISTINCT) memory, not O(rows):
``benchmarks/report_memory.py`` measures it on a 10-million-row table.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from pydicom.datadict import tag_for_keyword

from transforms.reading.naming import public_name

KEPT_VALUES = 2000
EXACT_DISTINCT = 1 << 21
HLL_BITS = 14
# pyarrow parses a CSV block at a time, a row must fit in one. Memory follows the block
# size (1 MiB: ~150 MiB peak for the whole process, 16 MiB: ~750 MiB), so the pass starts
# small and starts over with larger blocks only if a row does not fit.
CSV_BLOCK_BYTES = (1 << 20, 16 << 20, 256 << 20)
PARQUET_CELLS_PER_BATCH = 1 << 21  # rows per batch = this / columns: wide tables, small batches


def column_of(keyword: str) -> str:
    """The table's column name of a public element, e.g. ``Modality (0008,0060)``."""
    return public_name(tag_for_keyword(keyword))


# What the report shows a distribution of: (key, DICOM keyword).
DISTRIBUTIONS = (
    ("modality", "Modality"),
    ("sop_class", "SOPClassUID"),
    ("manufacturer", "Manufacturer"),
    ("transfer_syntax", "TransferSyntaxUID"),
)
MODEL = "ManufacturerModelName"
STUDY_DATE = "StudyDate"
# Distinct counts: (key, DICOM keyword).
DISTINCT = (
    ("patients", "PatientID"),
    ("studies", "StudyInstanceUID"),
    ("series", "SeriesInstanceUID"),
)
PAIR_SEPARATOR = "\x1f"  # between manufacturer and model in the "models" counter


class ValueCounts:
    """Counts per value, keeping at most ``2 * cap`` values between prunes."""

    def __init__(self, cap: int = KEPT_VALUES):
        self.cap = cap
        self.counts: dict[str, int] = {}
        self.other = 0  # values folded away when pruning
        self.approximate = False

    def add_array(self, array) -> None:
        if len(array) == array.null_count:
            return
        counted = pc.value_counts(array)
        for value, count in zip(counted.field("values").to_pylist(),
                                counted.field("counts").to_pylist()):
            if value is not None:
                self.add(value, count)

    def add(self, value: str, count: int = 1) -> None:
        self.counts[value] = self.counts.get(value, 0) + count
        if len(self.counts) > 2 * self.cap:
            self._prune()

    def _prune(self) -> None:
        kept = sorted(self.counts.items(), key=lambda item: (-item[1], item[0]))
        self.other += sum(count for _, count in kept[self.cap:])
        self.counts = dict(kept[: self.cap])
        self.approximate = True

    def most_common(self, limit: int | None = None) -> list[tuple[str, int]]:
        ordered = sorted(self.counts.items(), key=lambda item: (-item[1], item[0]))
        return ordered if limit is None else ordered[:limit]

    def total(self) -> int:
        return sum(self.counts.values()) + self.other

    def as_dict(self) -> dict:
        return {"counts": self.most_common(), "other": self.other,
                "approximate": self.approximate}


class DistinctCount:
    """Distinct strings: an exact set of 64-bit hashes, then a HyperLogLog sketch."""

    def __init__(self, exact_limit: int = EXACT_DISTINCT):
        self.exact_limit = exact_limit
        self.hashes = np.empty(0, dtype=np.uint64)  # sorted, unique
        self.pending: list[np.ndarray] = []
        self.pending_size = 0
        self.registers: np.ndarray | None = None  # the sketch, once exact_limit is passed

    def add_array(self, array) -> None:
        if len(array) == array.null_count:
            return
        values = pc.unique(array.drop_null()).to_pylist()
        # hash() of str is 64-bit SipHash, salted per process: consistent within this pass.
        hashed = np.fromiter((hash(value) for value in values), dtype=np.int64,
                             count=len(values)).view(np.uint64)
        if self.registers is not None:
            self._sketch(hashed)
            return
        self.pending.append(hashed)
        self.pending_size += len(hashed)
        if self.pending_size > max(1 << 16, len(self.hashes)):
            self._merge()

    def _merge(self) -> None:
        if self.pending:
            self.hashes = np.unique(np.concatenate([self.hashes, *self.pending]))
            self.pending, self.pending_size = [], 0
        if len(self.hashes) > self.exact_limit:
            self.registers = np.zeros(1 << HLL_BITS, dtype=np.uint8)
            self._sketch(self.hashes)
            self.hashes = np.empty(0, dtype=np.uint64)

    def _sketch(self, hashed: np.ndarray) -> None:
        index = (hashed >> np.uint64(64 - HLL_BITS)).astype(np.intp)
        rest_bits = 64 - HLL_BITS
        rest = hashed & np.uint64((1 << rest_bits) - 1)
        # rank = position of the leftmost 1 in the remaining bits (all zero: rest_bits + 1)
        with np.errstate(divide="ignore"):
            top = np.floor(np.log2(rest.astype(np.float64)))
        rank = np.where(rest == 0, rest_bits + 1, rest_bits - top).astype(np.uint8)
        np.maximum.at(self.registers, index, rank)

    @property
    def estimated(self) -> bool:
        self._merge()
        return self.registers is not None

    def count(self) -> int:
        self._merge()
        if self.registers is None:
            return int(len(self.hashes))
        m = float(len(self.registers))
        alpha = 0.7213 / (1 + 1.079 / m)
        raw = alpha * m * m / float(np.sum(np.power(2.0, -self.registers.astype(np.float64))))
        zeros = int(np.count_nonzero(self.registers == 0))
        if raw <= 2.5 * m and zeros:
            return int(round(m * math.log(m / zeros)))  # linear counting for small sets
        return int(round(raw))


def _text(array):
    """A column as strings (Parquet types such as date32 cast to text), or None."""
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    if pa.types.is_string(array.type) or pa.types.is_large_string(array.type):
        return array
    try:
        return pc.cast(array, pa.string())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None


@dataclass
class TableStats:
    """Everything the report shows about the table, accumulated batch by batch."""

    columns: list[str] = field(default_factory=list)
    filled: list[int] = field(default_factory=list)
    rows: int = 0
    distributions: dict = field(default_factory=dict)
    models: ValueCounts = field(default_factory=ValueCounts)
    study_months: ValueCounts = field(default_factory=lambda: ValueCounts(cap=100_000))
    distinct: dict = field(default_factory=dict)
    source: str = ""

    def __post_init__(self):
        self.distributions = {key: ValueCounts() for key, _ in DISTRIBUTIONS}
        self.distinct = {key: DistinctCount() for key, _ in DISTINCT}

    def start(self, columns: list[str], source: str) -> None:
        self.columns = list(columns)
        self.filled = [0] * len(columns)
        self.source = source

    def add_batch(self, batch: pa.RecordBatch) -> None:
        filled = [len(column) - column.null_count for column in batch.columns]
        names = {name: i for i, name in enumerate(batch.schema.names)}

        def column(name: str):
            index = names.get(name)
            return None if index is None else batch.column(index)

        self.add_columns(batch.num_rows, filled, column)

    def add_columns(self, rows: int, filled, column) -> None:
        """``rows`` more rows: ``filled``, per column, how many hold a value;
        ``column(name)``, a column of them (None if the table has none such)."""
        self.rows += rows
        for index, count in enumerate(filled):
            self.filled[index] += int(count)

        def text_column(keyword: str):
            values = column(column_of(keyword))
            if values is None:  # a table written with --column-names keyword
                values = column(keyword)
            return None if values is None else _text(values)

        for key, keyword in DISTRIBUTIONS:
            values = text_column(keyword)
            if values is not None:
                self.distributions[key].add_array(values)
        for key, keyword in DISTINCT:
            values = text_column(keyword)
            if values is not None:
                self.distinct[key].add_array(values)
        manufacturer, model = text_column("Manufacturer"), text_column(MODEL)
        if manufacturer is not None or model is not None:
            empty = pa.array([""] * rows, pa.string())
            pairs = pc.binary_join_element_wise(
                pc.fill_null(manufacturer if manufacturer is not None else empty, ""),
                pc.fill_null(model if model is not None else empty, ""),
                PAIR_SEPARATOR,
            )
            self.models.add_array(pc.if_else(pc.equal(pairs, PAIR_SEPARATOR), None, pairs))
        dates = text_column(STUDY_DATE)
        if dates is not None:
            # DA as written (20240131, legacy 2024.01.31) or as Parquet's date (2024-01-31).
            digits = pc.replace_substring_regex(dates, r"[-.]", "")
            self.study_months.add_array(pc.utf8_slice_codeunits(digits, 0, 6))

    def as_dict(self) -> dict:
        return {
            "source": self.source,
            "rows": self.rows,
            "fill": list(zip(self.columns, self.filled)),
            "distributions": {key: counts.as_dict() for key, counts in self.distributions.items()},
            "models": self.models.as_dict(),
            "study_months": self.study_months.as_dict(),
            "distinct": {key: {"count": counter.count(), "estimated": counter.estimated}
                         for key, counter in self.distinct.items()},
        }


def _csv_header(path: str) -> list[str]:
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as stream:
        text = io.TextIOWrapper(stream, encoding="utf-8", newline="")
        return next(csv.reader(text), [])


def scan_csv(path: str) -> TableStats:
    """Stream the CSV ``path`` (local or bucket) into new stats."""
    header = _csv_header(path)
    convert = pa_csv.ConvertOptions(
        column_types={name: pa.string() for name in header},
        strings_can_be_null=True,
        null_values=[""],
    )
    parse = pa_csv.ParseOptions(newlines_in_values=True)
    for block_size in CSV_BLOCK_BYTES:
        stats = TableStats()
        stats.start(header, path)
        if not header:
            return stats
        read = pa_csv.ReadOptions(block_size=block_size)
        try:
            with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as stream:
                reader = pa_csv.open_csv(stream, read_options=read, parse_options=parse,
                                         convert_options=convert)
                for batch in reader:
                    stats.add_batch(batch)
            return stats
        except pa.ArrowInvalid as exc:
            if "straddling" not in str(exc) or block_size == CSV_BLOCK_BYTES[-1]:
                raise
    raise AssertionError("unreachable")


def scan_parquet(path: str) -> TableStats:
    """Stream the Parquet file ``path`` (local or bucket) into new stats."""
    stats = TableStats()
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as stream:
        parquet = pq.ParquetFile(stream)
        names = parquet.schema_arrow.names
        stats.start(names, path)
        batch_rows = max(256, min(65536, PARQUET_CELLS_PER_BATCH // max(1, len(names))))
        for batch in parquet.iter_batches(batch_size=batch_rows, use_threads=False):
            stats.add_batch(batch)
    return stats
