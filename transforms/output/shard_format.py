"""Row shard format: how extracted rows wait on disk until the tables are written.

The table is wide and sparse (thousands of columns, a CT header fills about a hundred),
so a shard stores each row's filled cells, not a column per DICOM element: writing,
reading and merging shards costs what the rows hold, whatever the number of columns.

One shard is one Parquet file (zstd), written once and never changed, one row per file:

* ``DicomPath`` (string, never null), first, as the table shows it (a pseudonym with
  ``--pseudonymize-paths``); rows sorted by it, so the table writers merge shards
  without sorting.
* ``_file_size`` (int64) and ``_file_mtime`` (float64) of the file as it was matched
  (null when unknown): what the incremental manifest needs.
* ``_cells`` (list of int32): the row's filled cells as indices into the shard's keys,
  ascending, so a row's cells are in the table's column order.
* ``_values`` (list of large_string): each cell's text, exactly ``transforms.reading.flatten.Row.values``.
* Key-value metadata: ``dicom_meta.format`` = ``FORMAT_NAME``,
  ``dicom_meta.format_version`` = ``FORMAT_VERSION``, ``dicom_meta.keys`` = JSON
  ``[[column, VR], ...]``: a key is a column read with one VR, in the table's column
  order (``naming.column_sort_key``, then VR), so a column read with two VRs has two
  keys and each cell keeps its VR; ``dicom_meta.vrs`` = JSON ``{column: [VR, ...]}``
  (``DicomPath`` included), ``dicom_meta.rows``.
* Row groups of at most ``ROW_GROUP_ROWS`` rows and about ``ROW_GROUP_BYTES`` of text:
  a k-way merge holds about one batch per open shard, so this bounds its memory.

Readable by anything that reads Parquet, e.g.
``duckdb -c "SELECT DicomPath, unnest(_values) FROM 'rows-*.parquet'"``. A file that is
not such a shard, or of another version, raises ``ShardFormatError`` when opened;
callers decide (the state treats it as unusable and re-extracts).
"""

from __future__ import annotations

import functools
import json
from typing import Iterable, Iterator, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from transforms.common.atomic_files import open_write
from transforms.common.rows import PATH_COLUMN, is_grouping

from transforms.reading.naming import column_sort_key

FORMAT_NAME = "dicom-meta-extract/row-shard"
FORMAT_VERSION = 2
SIZE_COLUMN = "_file_size"
MTIME_COLUMN = "_file_mtime"
CELLS_COLUMN = "_cells"
VALUES_COLUMN = "_values"
ROW_GROUP_ROWS = 1024
ROW_GROUP_BYTES = 8 << 20
COMPRESSION = "zstd"
SUFFIX = ".parquet"
PATH_VRS = frozenset({"UR"})

_KEY_FORMAT = b"dicom_meta.format"
_KEY_VERSION = b"dicom_meta.format_version"
_KEY_KEYS = b"dicom_meta.keys"
_KEY_VRS = b"dicom_meta.vrs"
_KEY_ROWS = b"dicom_meta.rows"

SCHEMA = pa.schema([
    pa.field(PATH_COLUMN, pa.string(), nullable=False),
    pa.field(SIZE_COLUMN, pa.int64()),
    pa.field(MTIME_COLUMN, pa.float64()),
    pa.field(CELLS_COLUMN, pa.list_(pa.field("element", pa.int32(), nullable=False))),
    pa.field(VALUES_COLUMN, pa.list_(pa.field("element", pa.large_string(), nullable=False))),
])


class ShardFormatError(Exception):
    """Not a row shard of this format and version (foreign, corrupt, other version)."""


class ShardInfo(NamedTuple):
    """What flows through the pipeline instead of the rows: small and picklable by Beam."""

    path: str
    rows: int
    columns: dict  # column name -> frozenset of VRs seen in this shard
    size: int | None = None  # bytes, when known: ranged reads find the footer without a lookup


def key_order(key: tuple) -> tuple:
    """Keys sort in the table's column order; a column's keys by VR."""
    name, vr = key
    return column_sort_key(name), vr or ""


def columns_of(keys: list) -> dict:
    """``{column: frozenset(VRs)}`` of a shard's keys, ``DicomPath`` included; grouping
    cells (``rows.GROUPING_PREFIX``) are no columns."""
    columns: dict = {PATH_COLUMN: set(PATH_VRS)}
    for name, vr in keys:
        if not is_grouping(name):
            columns.setdefault(name, set()).update([vr] if vr else ())
    return {name: frozenset(vrs) for name, vrs in columns.items()}


def _metadata(keys: list, rows: int) -> dict:
    columns = columns_of(keys)
    return {
        _KEY_FORMAT: FORMAT_NAME.encode(),
        _KEY_VERSION: str(FORMAT_VERSION).encode(),
        _KEY_KEYS: json.dumps([list(key) for key in keys]).encode(),
        _KEY_VRS: json.dumps({name: sorted(vrs) for name, vrs in columns.items()}).encode(),
        _KEY_ROWS: str(rows).encode(),
    }


class CellRows(NamedTuple):
    """Rows in the shard layout, in memory: what is written and what is read back."""

    paths: list  # str per row
    sizes: list  # int or None per row
    mtimes: list  # float or None per row
    offsets: np.ndarray  # int64, rows + 1: row i's cells are offsets[i]:offsets[i + 1]
    keys: np.ndarray  # int32 per cell: an index into the shard's (or table's) keys
    values: pa.Array  # large_string per cell

    def table(self) -> pa.Table:
        offsets = pa.array(self.offsets.astype(np.int32, copy=False))
        return pa.Table.from_arrays([
            pa.array(self.paths, pa.string()),
            pa.array(self.sizes, pa.int64()),
            pa.array(self.mtimes, pa.float64()),
            pa.ListArray.from_arrays(offsets, pa.array(self.keys, pa.int32()),
                                     type=SCHEMA.field(CELLS_COLUMN).type),
            pa.ListArray.from_arrays(offsets, self.values,
                                     type=SCHEMA.field(VALUES_COLUMN).type),
        ], schema=SCHEMA)


def shown_path(row) -> str:
    """A row's ``DicomPath`` as the table shows it: with ``--pseudonymize-paths`` its
    pseudonym (``row.path`` stays the file's path, for its size and mtime)."""
    return row.values.get(PATH_COLUMN) or row.path


def cell_rows(rows: Iterable) -> tuple[CellRows, list]:
    """Rows (``Row``-like: ``path``, ``values``, ``vrs``, optional ``size``/``mtime``)
    -> the shard's rows sorted by path, each row's cells in key order, and the keys."""
    rows = sorted(rows, key=shown_path)
    # Gathered in C loops (extend, map), then numbered by Arrow and numpy: no Python
    # code runs per cell.
    names, vrs, texts, lengths = [], [], [], []
    for row in rows:
        values = row.values
        names.extend(values)
        texts.extend(values.values())
        vrs.extend(map(row.vrs.get, values))
        lengths.append(len(values))
    name_codes = pa.array(names, pa.string()).dictionary_encode()
    vr_codes = pa.array(vrs, pa.string()).dictionary_encode()
    name_of = name_codes.dictionary.to_pylist()
    vr_of = vr_codes.dictionary.to_pylist() + [None]
    vr_numbers = vr_codes.indices.fill_null(len(vr_of) - 1).to_numpy().astype(np.int64)
    pairs = name_codes.indices.to_numpy().astype(np.int64) * len(vr_of) + vr_numbers
    row_of_cell = np.repeat(np.arange(len(rows)), lengths)
    text_at = None  # where each cell's text is in ``texts`` (None: the same place)
    if PATH_COLUMN in name_of:  # DicomPath is the row's own column, not a cell
        text_at = np.flatnonzero(name_codes.indices.to_numpy() != name_of.index(PATH_COLUMN))
        pairs, row_of_cell = pairs[text_at], row_of_cell[text_at]
    found, cells = np.unique(pairs, return_inverse=True)
    keys = [(name_of[pair // len(vr_of)], vr_of[pair % len(vr_of)]) for pair in found.tolist()]
    ordered = sorted(range(len(keys)), key=lambda number: key_order(keys[number]))
    renumber = np.empty(len(keys), np.int64)
    renumber[ordered] = np.arange(len(keys))
    cells = renumber[cells.reshape(-1)] if len(keys) else np.zeros(0, np.int64)
    counts = np.bincount(row_of_cell, minlength=len(rows)) if len(rows) else np.zeros(0)
    offsets = np.zeros(len(rows) + 1, np.int64)
    np.cumsum(counts, out=offsets[1:])
    # Within a row, cells in key (= column) order: sort by (row, key).
    order = np.lexsort((cells, row_of_cell))
    # One gather of the texts (with --format json, each file's JSON line is one of them).
    text_order = order if text_at is None else text_at[order]
    return CellRows(
        [shown_path(row) for row in rows],
        [getattr(row, "size", None) for row in rows],
        [getattr(row, "mtime", None) for row in rows], offsets, cells[order].astype(np.int32),
        pa.array(texts, pa.large_string()).take(pa.array(text_order)),
    ), [keys[number] for number in ordered]


def _row_groups(offsets: np.ndarray, values: pa.Array) -> list[tuple[int, int]]:
    """``(first row, rows)`` of each row group: at most ``ROW_GROUP_ROWS`` rows and about
    ``ROW_GROUP_BYTES`` of text (a row larger than that is a group of its own)."""
    count = len(offsets) - 1
    if count <= 0:
        return []
    text_offsets = np.frombuffer(values.buffers()[1], np.int64,
                                 len(values) + 1, values.offset * 8) if len(values) else None
    groups, start = [], 0
    while start < count:
        end = min(count, start + ROW_GROUP_ROWS)
        if text_offsets is not None:
            first = text_offsets[offsets[start]]
            # The last row whose text ends within the budget (at least one row).
            ends = text_offsets[offsets[start + 1:end + 1]] - first
            fits = int(np.searchsorted(ends, ROW_GROUP_BYTES, side="right"))
            end = start + max(1, fits)
        groups.append((start, end - start))
        start = end
    return groups


class ShardWriter:
    """Writes one shard from ``CellRows`` pieces that arrive in path order."""

    def __init__(self, path: str, keys: list):
        self.path = path
        self.keys = [tuple(key) for key in keys]
        self.rows = 0
        self._out = open_write(path)
        self._counting = _CountingStream(self._out)
        # No statistics and no stored Arrow schema: nothing filters shards, and both make
        # the footer, held by the merge per open shard, grow.
        self._writer = pq.ParquetWriter(self._counting, SCHEMA, compression=COMPRESSION,
                                        write_statistics=False, store_schema=False)

    def write(self, cells: CellRows) -> None:
        table = cells.table()
        for start, rows in _row_groups(cells.offsets, cells.values):
            self._writer.write_table(table.slice(start, rows), row_group_size=rows)
        self.rows += table.num_rows

    def close(self) -> ShardInfo:
        if not self.rows:  # one empty row group: readers' batch loops need one
            self._writer.write_table(SCHEMA.empty_table())
        self._writer.add_key_value_metadata(_metadata(self.keys, self.rows))
        self._writer.close()
        self._out.close()
        return ShardInfo(self.path, self.rows, columns_of(self.keys), self._counting.written)


class _CountingStream:
    """A write-only file object that counts what passes (the shard's size)."""

    def __init__(self, out):
        self.out = out
        self.written = 0
        self.closed = False

    def write(self, data) -> int:
        self.out.write(data)
        self.written += len(data)
        return len(data)

    def flush(self) -> None:
        pass

    def tell(self) -> int:
        return self.written

    def close(self) -> None:
        self.closed = True


def write_shard(path: str, rows: Iterable) -> ShardInfo:
    """Write ``rows`` as one shard at ``path`` (a name no other attempt uses)."""
    cells, keys = cell_rows(rows)
    writer = ShardWriter(path, keys)
    writer.write(cells)
    return writer.close()


def check_metadata(metadata: dict | None, path: str = "") -> tuple[int, dict]:
    """``(rows, {column: frozenset(VRs)})`` from a shard's key-value metadata."""
    rows, keys = check_keys(metadata, path)
    return rows, columns_of(keys)


_parsed = functools.lru_cache(maxsize=4)(json.loads)  # a wide shard's keys: parsed once


def check_keys(metadata: dict | None, path: str = "") -> tuple[int, list]:
    """``(rows, [(column, VR), ...])`` from a shard's key-value metadata."""
    metadata = metadata or {}
    if metadata.get(_KEY_FORMAT) != FORMAT_NAME.encode():
        raise ShardFormatError(f"{path}: not a {FORMAT_NAME} file")
    version = metadata.get(_KEY_VERSION, b"").decode()
    if version != str(FORMAT_VERSION):
        raise ShardFormatError(f"{path}: {FORMAT_NAME} version {version!r}, "
                               f"this code reads {FORMAT_VERSION}")
    try:
        keys = [(name, vr) for name, vr in _parsed(metadata[_KEY_KEYS])]
        rows = int(metadata[_KEY_ROWS])
    except (KeyError, ValueError, TypeError) as exc:
        raise ShardFormatError(f"{path}: unreadable shard metadata") from exc
    return rows, keys


def open_shard(stream, path: str = "", **options) -> pq.ParquetFile:
    """A ``ParquetFile`` over a shard, its format, version and layout checked."""
    try:
        parquet = pq.ParquetFile(stream, **options)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise ShardFormatError(f"{path}: not a Parquet file ({exc})") from exc
    check_keys(parquet.metadata.metadata, path)
    if not _is_layout(parquet.schema_arrow):
        raise ShardFormatError(f"{path}: not the {FORMAT_NAME} {FORMAT_VERSION} layout")
    return parquet


def _plain(data_type: pa.DataType) -> str:
    """A type's name with list items' names and nullability, and string sizes, left out
    (Parquet without a stored Arrow schema reads ``large_string`` back as ``string``)."""
    if pa.types.is_list(data_type):
        return f"list<{_plain(data_type.value_type)}>"
    return "string" if pa.types.is_large_string(data_type) else str(data_type)


def _is_layout(schema: pa.Schema) -> bool:
    return (schema.names == SCHEMA.names
            and [_plain(field.type) for field in schema] == [_plain(f.type) for f in SCHEMA])


def bucket_size(path: str) -> int | None:
    """An object's size on buckets (so a footer costs a ranged read, not the object)."""
    from transforms.inputs.storage import is_bucket

    if not is_bucket(path):
        return None
    return FileSystems.match([path])[0].metadata_list[0].size_in_bytes


def open_stream(path: str, size: int | None = None):
    """A seekable stream over a shard (or any Parquet state file), ranged on buckets."""
    from transforms.inputs.ranged import open_ranged

    return open_ranged(path, size=size if size is not None else bucket_size(path))


def read_info(path: str, size: int | None = None) -> ShardInfo:
    """A shard's ``ShardInfo`` from its footer alone."""
    size = size if size is not None else bucket_size(path)
    with open_stream(path, size) as source:
        parquet = open_shard(source, path)
        rows, columns = check_metadata(parquet.metadata.metadata, path)
    return ShardInfo(path, rows, columns, size)


def _list_parts(column: pa.Array) -> tuple[np.ndarray, pa.Array]:
    """A list column's offsets (from 0) and its flat items."""
    offsets = column.offsets.to_numpy().astype(np.int64)
    items = column.values.slice(offsets[0], offsets[-1] - offsets[0])
    return offsets - offsets[0], items


def batch_cell_rows(batch: pa.RecordBatch, files: bool = True) -> CellRows:
    """One record batch of a shard as ``CellRows`` (keys are the shard's)."""
    offsets, keys = _list_parts(batch.column(CELLS_COLUMN))
    value_offsets, values = _list_parts(batch.column(VALUES_COLUMN))
    if not np.array_equal(offsets, value_offsets):
        raise ShardFormatError("a row's _cells and _values differ in length")
    rows = batch.num_rows
    return CellRows(
        batch.column(PATH_COLUMN).to_pylist(),
        batch.column(SIZE_COLUMN).to_pylist() if files else [None] * rows,
        batch.column(MTIME_COLUMN).to_pylist() if files else [None] * rows,
        offsets, keys.to_numpy().astype(np.int32, copy=False), values.cast(pa.large_string()),
    )


class ShardRow(NamedTuple):
    path: str
    values: dict  # column -> text, non-empty only, DicomPath included
    vrs: dict  # column -> VR
    size: int | None
    mtime: float | None


def read_rows(path: str, batch_size: int = ROW_GROUP_ROWS) -> Iterator[ShardRow]:
    """Every row of a shard as ``ShardRow``, in path order (local or bucket, ranged)."""
    with open_stream(path) as stream:
        parquet = open_shard(stream, path)
        _, keys = check_keys(parquet.metadata.metadata, path)
        for batch in parquet.iter_batches(batch_size=batch_size):
            cells = batch_cell_rows(batch)
            texts = cells.values.to_pylist()
            numbers = cells.keys.tolist()
            for index, row_path in enumerate(cells.paths):
                values, vrs = {PATH_COLUMN: row_path}, {PATH_COLUMN: "UR"}
                for at in range(cells.offsets[index], cells.offsets[index + 1]):
                    name, vr = keys[numbers[at]]
                    values[name] = texts[at]
                    vrs[name] = vr
                yield ShardRow(row_path, values, vrs, cells.sizes[index], cells.mtimes[index])


def read_manifest(path: str) -> Iterator[tuple]:
    """``(DicomPath, size, mtime)`` of every row of a shard: three columns read, not all."""
    with open_stream(path) as stream:
        parquet = open_shard(stream, path)
        table = parquet.read(columns=[PATH_COLUMN, SIZE_COLUMN, MTIME_COLUMN])
    yield from zip(*(table.column(i).to_pylist() for i in range(3)))
