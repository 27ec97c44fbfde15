"""Row shard format: how extracted rows wait on disk until the tables are written.

One shard is one Parquet file (zstd), written once and never changed:

* ``DicomPath`` first (string, never null), then one nullable **string** column per
  DICOM column that has a value in at least one of the shard's rows, in the table's
  column order (``flatten.order_columns``). Values are exactly the text of
  ``transforms.flatten.Row.values``; an absent value is null, never ``""``.
* Rows sorted by ``DicomPath``, so the table writers merge shards without sorting.
* What the incremental manifest needs per row: ``_file_size`` (int64) and
  ``_file_mtime`` (float64) of the file as it was matched (null when unknown).
* Per-row VRs only where a column was read with more than one VR in this shard: a
  string column ``_vr <column name>`` holding each row's VR (null where the value is).
  Names starting with ``_`` are never DICOM columns (those end in a ``(gggg,eeee)`` tag
  or ``#items``).
* Key-value metadata: ``dicom_meta.format`` = ``FORMAT_NAME``,
  ``dicom_meta.format_version`` = ``FORMAT_VERSION``, ``dicom_meta.vrs`` = JSON
  ``{column: [VR, ...]}`` (sorted), ``dicom_meta.rows``.
* Small row groups (``ROW_GROUP_ROWS``): a k-way merge holds about one row group per
  open shard, so this bounds the merge's memory.

Readable by anything that reads Parquet (``duckdb -c "FROM 'rows-*.parquet'"``). A file
that is not such a shard, or of another version, raises ``ShardFormatError`` when
opened; callers decide (the state treats it as unusable and re-extracts).
"""

from __future__ import annotations

import json
from typing import Iterable, Iterator, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from transforms.flatten import PATH_COLUMN, order_columns

FORMAT_NAME = "dicom-meta-extract/row-shard"
FORMAT_VERSION = 1
SIZE_COLUMN = "_file_size"
MTIME_COLUMN = "_file_mtime"
VR_PREFIX = "_vr "
ROW_GROUP_ROWS = 256
COMPRESSION = "zstd"
SUFFIX = ".parquet"

_KEY_FORMAT = b"dicom_meta.format"
_KEY_VERSION = b"dicom_meta.format_version"
_KEY_VRS = b"dicom_meta.vrs"
_KEY_ROWS = b"dicom_meta.rows"


class ShardFormatError(Exception):
    """Not a row shard of this format and version (foreign, corrupt, other version)."""


class ShardInfo(NamedTuple):
    """What flows through the pipeline instead of the rows: small and picklable by Beam."""

    path: str
    rows: int
    columns: dict  # column name -> frozenset of VRs seen in this shard
    size: int | None = None  # bytes, when known: ranged reads find the footer without a lookup


def _open_write(path: str):
    return FileSystems.create(path, compression_type=CompressionTypes.UNCOMPRESSED)


def shard_table(rows: Iterable) -> tuple[pa.Table, dict]:
    """Rows (``Row``-like: ``path``, ``values``, ``vrs``, optional ``size``/``mtime``)
    -> the shard's table, sorted by path, and ``{column: frozenset(VRs)}``."""
    rows = sorted(rows, key=lambda row: row.path)
    count = len(rows)
    texts: dict = {}
    vrs_seen: dict = {}
    row_vrs: dict = {}
    for index, row in enumerate(rows):
        for name, text in row.values.items():
            column = texts.get(name)
            if column is None:
                column = texts[name] = [None] * count
                row_vrs[name] = [None] * count
                vrs_seen[name] = set()
            column[index] = text
            vr = row.vrs.get(name)
            row_vrs[name][index] = vr
            vrs_seen[name].add(vr)
    names = order_columns(set(texts) | {PATH_COLUMN})
    if PATH_COLUMN not in texts:  # rows always carry it; an empty shard may not
        texts[PATH_COLUMN] = [row.path for row in rows]
        vrs_seen[PATH_COLUMN] = {"UR"}
    arrays = [pa.array(texts[name], type=pa.string()) for name in names]
    fields = [pa.field(name, pa.string(), nullable=name != PATH_COLUMN) for name in names]
    arrays.append(pa.array([getattr(row, "size", None) for row in rows], type=pa.int64()))
    fields.append(pa.field(SIZE_COLUMN, pa.int64()))
    arrays.append(pa.array([getattr(row, "mtime", None) for row in rows], type=pa.float64()))
    fields.append(pa.field(MTIME_COLUMN, pa.float64()))
    for name in names:
        if len(vrs_seen[name]) > 1:
            arrays.append(pa.array(row_vrs[name], type=pa.string()).dictionary_encode())
            fields.append(pa.field(VR_PREFIX + name, pa.dictionary(pa.int32(), pa.string())))
    columns = {name: frozenset(vr for vr in vrs_seen[name] if vr) for name in names}
    metadata = {
        _KEY_FORMAT: FORMAT_NAME.encode(),
        _KEY_VERSION: str(FORMAT_VERSION).encode(),
        _KEY_VRS: json.dumps({name: sorted(vrs) for name, vrs in columns.items()}).encode(),
        _KEY_ROWS: str(count).encode(),
    }
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields, metadata=metadata)), columns


def write_shard(path: str, rows: Iterable) -> ShardInfo:
    """Write ``rows`` as one shard at ``path`` (a name no other attempt uses)."""
    table, columns = shard_table(rows)
    buffer = pa.BufferOutputStream()
    # No statistics and no stored Arrow schema (every column is a string): nothing filters
    # shards, and both would make each footer, held by the merge per open shard, grow.
    # (Without the stored schema, key-value metadata must be added to the writer itself.)
    with pq.ParquetWriter(buffer, table.schema.remove_metadata(), compression=COMPRESSION,
                          write_statistics=False, store_schema=False) as writer:
        writer.write_table(table.replace_schema_metadata(), row_group_size=ROW_GROUP_ROWS)
        writer.add_key_value_metadata(table.schema.metadata)
    data = buffer.getvalue()
    with _open_write(path) as out:
        out.write(data)
    return ShardInfo(path, table.num_rows, columns, data.size)


def shard_schema(columns: dict) -> pa.Schema:
    """The schema of a shard holding ``columns`` ({name: VRs}), without per-row VRs."""
    names = order_columns(set(columns) | {PATH_COLUMN})
    fields = [pa.field(name, pa.string(), nullable=name != PATH_COLUMN) for name in names]
    fields += [pa.field(SIZE_COLUMN, pa.int64()), pa.field(MTIME_COLUMN, pa.float64())]
    return pa.schema(fields, metadata={
        _KEY_FORMAT: FORMAT_NAME.encode(),
        _KEY_VERSION: str(FORMAT_VERSION).encode(),
        _KEY_VRS: json.dumps({name: sorted(columns.get(name, ())) for name in names}).encode(),
    })


class ShardWriter:
    """Writes an already sorted stream of rows as one shard, row group by row group
    (the merge's intermediate runs). Per-row VRs are not kept: the tables never need
    them; shards the state reuses are written by ``write_shard``."""

    def __init__(self, path: str, columns: dict):
        self.path = path
        self.columns = columns
        schema = shard_schema(columns)
        self.names = [name for name in schema.names if not name.startswith("_")]
        self.rows = 0
        self._schema = schema
        self._out = _open_write(path)
        self._counting = _CountingStream(self._out)
        self._writer = pq.ParquetWriter(self._counting, schema.remove_metadata(),
                                        compression=COMPRESSION, write_statistics=False,
                                        store_schema=False)
        self._pending: dict = {}
        self._filled = 0

    def add(self, cells: list, index: int) -> None:
        """Row ``index`` of a batch's ``cells`` (``batch_cells``)."""
        at = self._filled
        for name, value in cells[index]:
            column = self._pending.get(name)
            if column is None:
                column = self._pending[name] = [None] * ROW_GROUP_ROWS
            column[at] = value
        self._filled += 1
        if self._filled == ROW_GROUP_ROWS:
            self._flush()

    def _flush(self) -> None:
        count = self._filled
        if not count:
            return
        arrays = [pa.array(self._pending[name][:count] if name in self._pending
                           else [None] * count, pa.string()) for name in self.names]
        arrays += [pa.nulls(count, pa.int64()), pa.nulls(count, pa.float64())]
        self._writer.write_table(pa.Table.from_arrays(arrays, schema=self._writer.schema))
        self.rows += count
        self._pending, self._filled = {}, 0

    def close(self) -> ShardInfo:
        self._flush()
        metadata = dict(self._schema.metadata)
        metadata[_KEY_ROWS] = str(self.rows).encode()
        self._writer.add_key_value_metadata(metadata)
        self._writer.close()
        self._out.close()
        return ShardInfo(self.path, self.rows, self.columns, self._counting.written)


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


def check_metadata(metadata: dict | None, path: str = "") -> tuple[int, dict]:
    """``(rows, {column: frozenset(VRs)})`` from a shard's key-value metadata."""
    metadata = metadata or {}
    if metadata.get(_KEY_FORMAT) != FORMAT_NAME.encode():
        raise ShardFormatError(f"{path}: not a {FORMAT_NAME} file")
    version = metadata.get(_KEY_VERSION, b"").decode()
    if version != str(FORMAT_VERSION):
        raise ShardFormatError(f"{path}: {FORMAT_NAME} version {version!r}, "
                               f"this code reads {FORMAT_VERSION}")
    try:
        vrs = json.loads(metadata[_KEY_VRS])
        rows = int(metadata[_KEY_ROWS])
    except (KeyError, ValueError) as exc:
        raise ShardFormatError(f"{path}: unreadable shard metadata") from exc
    return rows, {name: frozenset(values) for name, values in vrs.items()}


def open_shard(stream, path: str = "") -> pq.ParquetFile:
    """A ``ParquetFile`` over a shard, its format and version checked."""
    try:
        parquet = pq.ParquetFile(stream)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise ShardFormatError(f"{path}: not a Parquet file ({exc})") from exc
    check_metadata(parquet.metadata.metadata, path)
    return parquet


def bucket_size(path: str) -> int | None:
    """An object's size on buckets (so a footer costs a ranged read, not the object)."""
    from transforms.storage import is_bucket

    if not is_bucket(path):
        return None
    return FileSystems.match([path])[0].metadata_list[0].size_in_bytes


def open_stream(path: str, size: int | None = None):
    """A seekable stream over a shard (or any Parquet state file), ranged on buckets."""
    from transforms.storage import open_ranged

    return open_ranged(path, size=size if size is not None else bucket_size(path))


def read_info(path: str, size: int | None = None) -> ShardInfo:
    """A shard's ``ShardInfo`` from its footer alone."""
    size = size if size is not None else bucket_size(path)
    with open_stream(path, size) as source:
        parquet = open_shard(source, path)
        rows, columns = check_metadata(parquet.metadata.metadata, path)
    return ShardInfo(path, rows, columns, size)


def batch_cells(batch: pa.RecordBatch) -> list[list]:
    """Per row of ``batch``, its non-null ``(column, text)`` pairs.

    Shards are wide and sparse (a shard holding one RT Structure Set has thousands of
    columns, nearly all null): the cost follows the filled cells, not rows x columns."""
    count = batch.num_rows
    cells: list = [[] for _ in range(count)]
    for name, column in zip(batch.schema.names, batch.columns):
        nulls = column.null_count
        if nulls == count:
            continue
        if nulls == 0:
            for row, text in zip(cells, column.to_pylist()):
                row.append((name, text))
            continue
        where = np.flatnonzero(pc.is_valid(column).to_numpy(zero_copy_only=False))
        for at, text in zip(where.tolist(), column.drop_null().to_pylist()):
            cells[at].append((name, text))
    return cells


def value_columns(schema: pa.Schema) -> list[str]:
    """The DICOM columns of a shard (``DicomPath`` included), in order."""
    return [name for name in schema.names if not name.startswith("_")]


class ShardRow(NamedTuple):
    path: str
    values: dict  # column -> text, non-empty only, DicomPath included
    vrs: dict  # column -> VR
    size: int | None
    mtime: float | None


def batch_rows(batch: pa.RecordBatch, columns: dict) -> Iterator[ShardRow]:
    """The rows of one record batch of a shard, as ``ShardRow`` (``Row`` + size/mtime)."""
    names = value_columns(batch.schema)
    cells = batch_cells(pa.RecordBatch.from_arrays([batch.column(name) for name in names],
                                                   names=names))
    sizes = batch.column(SIZE_COLUMN).to_pylist()
    mtimes = batch.column(MTIME_COLUMN).to_pylist()
    several = {name: batch.column(VR_PREFIX + name).to_pylist()
               for name in names if VR_PREFIX + name in batch.schema.names}
    single = {name: next(iter(vrs)) for name, vrs in columns.items() if len(vrs) == 1}
    for index, row in enumerate(cells):
        values = dict(row)
        vrs = {name: several[name][index] if name in several else single.get(name)
               for name in values}
        yield ShardRow(values[PATH_COLUMN], values, vrs, sizes[index], mtimes[index])


def read_rows(path: str, batch_size: int = ROW_GROUP_ROWS) -> Iterator[ShardRow]:
    """Every row of a shard, in path order (local or bucket, ranged reads)."""
    with open_stream(path) as stream:
        parquet = open_shard(stream, path)
        _, columns = check_metadata(parquet.metadata.metadata, path)
        for batch in parquet.iter_batches(batch_size=batch_size):
            yield from batch_rows(batch, columns)


def read_manifest(path: str) -> Iterator[tuple]:
    """``(DicomPath, size, mtime)`` of every row of a shard: three columns read, not all."""
    with open_stream(path) as stream:
        parquet = open_shard(stream, path)
        table = parquet.read(columns=[PATH_COLUMN, SIZE_COLUMN, MTIME_COLUMN])
    yield from zip(*(table.column(i).to_pylist() for i in range(3)))
