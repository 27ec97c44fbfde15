"""Parquet writing: convert spilled shards to sorted Parquet parts, then merge them.

The same shape as the CSV writer (``write_csv.py``): each spilled shard is converted in
parallel against the global column list (a side input), its rows sorted by
``DicomPath``, into a part file of small row groups in the temp dir. The merge is a
k-way merge on ``DicomPath`` over the parts, read batch by batch, and writes the output
row group by row group through ``pyarrow.parquet.ParquetWriter``: the rows come out in
the CSV's order whatever the runner or sharding, and no step holds the table in memory.

The schema (``types.arrow_schema``) is a pure function of the global columns, so every
part has exactly the output's schema. Values that do not parse as their column's type
are null in Parquet (their text stays in the CSV); each part counts them per column and
the merge sums the counts for the summary. The merged file is written under a temporary
name and renamed into place only when complete.
"""

from __future__ import annotations

import functools
import heapq
import uuid
from collections import Counter
from typing import Iterator, NamedTuple

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from transforms.flatten import PATH_COLUMN
from transforms.merge import FormatThenMerge, allow_open_files
from transforms.spill import read_shard_by_path
from transforms.storage import open_ranged
from transforms.types import ColumnConverter, arrow_schema

# Rows per row group in a part: what the merge holds per part at a time.
PART_ROW_GROUP_ROWS = 1024
# Rows per row group in the output.
OUTPUT_ROW_GROUP_ROWS = 16384
PART_COMPRESSION = "snappy"  # parts are read once, soon: fast over small
OUTPUT_COMPRESSION = "zstd"  # read by pandas, polars, DuckDB, Spark alike


class ParquetPart(NamedTuple):
    path: str
    rows: int
    size: int  # bytes: the merge reads the footer from the end without finding the end
    unparseable: dict  # column name -> values that did not parse as its type


def _open_write(path: str):
    return FileSystems.create(path, compression_type=CompressionTypes.UNCOMPRESSED)


def shard_table(rows: list[dict], schema: pa.Schema, vrs: dict) -> tuple[pa.Table, Counter]:
    """The rows as a table of ``schema``, and per column the values that did not parse."""
    # Rows are sparse (a file fills a fraction of an archive's columns): one pass over
    # each row's own values beats looking every column up in every row.
    texts = {field.name: [None] * len(rows) for field in schema}
    for index, values in enumerate(rows):
        for name, text in values.items():
            texts[name][index] = text
    arrays = []
    unparseable: Counter = Counter()
    for field in schema:
        name = field.name
        converter = ColumnConverter(field.type, vrs[name])
        array, bad = converter.convert(texts.pop(name))
        arrays.append(array)
        if bad:
            unparseable[name] += bad
    return pa.Table.from_arrays(arrays, schema=schema), unparseable


def column_vrs(columns) -> dict:
    vrs = {column.name: column.vrs for column in columns}
    vrs.setdefault(PATH_COLUMN, frozenset({"UR"}))
    return vrs


class ConvertShard(beam.DoFn):
    """Shard -> ParquetPart: the shard's rows, sorted by path, typed by the global schema."""

    def __init__(self, temp_dir: str):
        self.temp_dir = temp_dir

    def process(self, shard, columns):
        schema = arrow_schema(columns)
        rows = read_shard_by_path(shard.path)
        table, unparseable = shard_table(rows, schema, column_vrs(columns))
        path = FileSystems.join(self.temp_dir, f"part-{uuid.uuid4().hex}.parquet")
        with _open_write(path) as out:
            pq.write_table(
                table, out, row_group_size=PART_ROW_GROUP_ROWS, compression=PART_COMPRESSION
            )
        size = FileSystems.match([path])[0].metadata_list[0].size_in_bytes
        yield ParquetPart(path, len(rows), size, dict(unparseable))


def _part_rows(number: int, stream) -> Iterator[tuple]:
    """``(DicomPath, part number, batch key, row in batch, batch)`` of a sorted part."""
    for batch_number, batch in enumerate(
        pq.ParquetFile(stream).iter_batches(batch_size=PART_ROW_GROUP_ROWS)
    ):
        key = (number, batch_number)
        for row, path in enumerate(batch.column(PATH_COLUMN).to_pylist()):
            yield path, number, key, row, batch


class _RowGroupBuffer:
    """Rows picked from part batches, written as one row group once enough are picked."""

    def __init__(self, writer: pq.ParquetWriter, schema: pa.Schema):
        self.writer = writer
        self.schema = schema
        self.batches: dict = {}  # batch key -> (offset in the buffer's table, batch)
        self.size = 0
        self.picks: list[int] = []

    def add(self, key, row: int, batch: pa.RecordBatch) -> None:
        held = self.batches.get(key)
        if held is None:
            held = self.batches[key] = (self.size, batch)
            self.size += batch.num_rows
        self.picks.append(held[0] + row)
        if len(self.picks) >= OUTPUT_ROW_GROUP_ROWS:
            self.flush()

    def flush(self) -> None:
        if not self.picks:
            return
        table = pa.Table.from_batches([batch for _, batch in self.batches.values()], self.schema)
        self.writer.write_table(table.take(self.picks), row_group_size=OUTPUT_ROW_GROUP_ROWS)
        self.batches, self.size, self.picks = {}, 0, []


def merge_parquet_parts(parts, columns, output_path: str, temp_path: str) -> dict:
    """Write all parts' rows in path order to ``output_path``; return the rows written
    and the unparseable-value counts."""
    parts = sorted(parts, key=lambda part: part.path)
    schema = arrow_schema(columns)
    allow_open_files(len(parts))
    # Ranged reads: on a bucket FileSystems.open would buffer up to 16 MiB per part.
    streams = [open_ranged(part.path, size=part.size) for part in parts]
    rows = 0
    try:
        with _open_write(temp_path) as out:
            with pq.ParquetWriter(out, schema, compression=OUTPUT_COMPRESSION) as writer:
                buffer = _RowGroupBuffer(writer, schema)
                merged = heapq.merge(
                    *(_part_rows(n, stream) for n, stream in enumerate(streams)),
                    key=lambda item: (item[0], item[1]),
                )
                for _, _, key, row, batch in merged:
                    buffer.add(key, row, batch)
                    rows += 1
                buffer.flush()
    finally:
        for stream in streams:
            stream.close()
    expected = sum(part.rows for part in parts)
    if rows != expected:
        raise RuntimeError(f"merged {rows} Parquet rows but the parts hold {expected}")
    FileSystems.rename([temp_path], [output_path])
    if parts:
        FileSystems.delete([part.path for part in parts])
    unparseable: Counter = Counter()
    for part in parts:
        unparseable.update(part.unparseable)
    return {
        "parquet_rows": rows,
        "parquet_unparseable_values": sum(unparseable.values()),
        "parquet_unparseable_by_column": dict(sorted(unparseable.items())),
    }


class WriteParquet(FormatThenMerge):
    """Shards + columns -> one Parquet file; outputs ``{parquet_rows, parquet_unparseable_*}``
    once it is in place."""

    def __init__(self, output_path: str, temp_dir: str):
        super().__init__(
            ConvertShard(temp_dir),
            functools.partial(
                merge_parquet_parts,
                output_path=output_path,
                temp_path=FileSystems.join(temp_dir, "merged.parquet"),
            ),
        )
