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
``benchmarks/report_memory.py`` measures it on a 10-million-row table. The counters live
in ``counters.py``; stats counted apart merge (``shard_stats.py``).
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from pydicom.datadict import tag_for_keyword

from transforms.output.counters import DistinctCount, ValueCounts
from transforms.reading.naming import public_name

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
    stable_hashes: bool = False  # distinct counts that can merge with another's

    def __post_init__(self):
        self.distributions = {key: ValueCounts() for key, _ in DISTRIBUTIONS}
        self.distinct = {key: DistinctCount(stable=self.stable_hashes) for key, _ in DISTINCT}

    # As data (plain values and bytes), so that stats counted apart travel between
    # workers and merge in any order (shard_stats.py); needs ``stable_hashes``.
    def as_data(self) -> dict:
        return {
            "columns": self.columns, "filled": self.filled, "rows": self.rows,
            "source": self.source,
            "distributions": {key: counts.as_data()
                              for key, counts in self.distributions.items()},
            "models": self.models.as_data(), "study_months": self.study_months.as_data(),
            "distinct": {key: counter.as_data() for key, counter in self.distinct.items()},
        }

    @classmethod
    def from_data(cls, data: dict) -> "TableStats":
        stats = cls(columns=list(data["columns"]), filled=list(data["filled"]),
                    rows=data["rows"], source=data["source"], stable_hashes=True)
        stats.distributions = {key: ValueCounts.from_data(counts)
                               for key, counts in data["distributions"].items()}
        stats.models = ValueCounts.from_data(data["models"])
        stats.study_months = ValueCounts.from_data(data["study_months"])
        stats.distinct = {key: DistinctCount.from_data(counter)
                          for key, counter in data["distinct"].items()}
        return stats

    def merge(self, other: "TableStats") -> None:
        if other.columns != self.columns:
            raise ValueError("table stats of different columns")
        self.rows += other.rows
        self.filled = [mine + theirs for mine, theirs in zip(self.filled, other.filled)]
        for key, counts in other.distributions.items():
            self.distributions[key].merge(counts)
        self.models.merge(other.models)
        self.study_months.merge(other.study_months)
        for key, counter in other.distinct.items():
            self.distinct[key].merge(counter)

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
