"""CSV writing: format spilled shards as header-less CSV shards, then merge them.

Each shard is formatted in parallel against the global column list (a side input),
its rows sorted by ``DicomPath``. Beside each CSV shard goes a small index of
``(DicomPath, byte length)`` per row, so the final merge can interleave the sorted
shards by copying byte ranges: the output is sorted by path whatever the runner, the
number of workers or how bundles fell, and no step ever holds the table in memory.

The merged file is written under a temporary name and renamed into place only when
complete. Python's ``csv`` module writes the records (RFC 4180: CRLF line ends, fields
with commas, quotes or line breaks quoted) because the merge needs each record's length.
"""

from __future__ import annotations

import csv
import functools
import heapq
import io
import pickle
import uuid
from typing import Iterator, NamedTuple

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from transforms.csv_safety import guard_fields, guarded_columns
from transforms.flatten import PATH_COLUMN
from transforms.merge import FormatThenMerge, allow_open_files
from transforms.spill import read_shard_by_path
from transforms.storage import open_ranged

INDEX_CHUNK = 1024
COPY_BLOCK = 1 << 20


class CsvShard(NamedTuple):
    path: str
    index_path: str
    rows: int


def csv_record(fields) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerow(fields)
    return buffer.getvalue()


def encode(text: str) -> bytes:
    # Paths that are not valid UTF-8 keep their odd bytes visible instead of failing.
    return text.encode("utf-8", "backslashreplace")


def column_names(columns) -> list[str]:
    names = [column.name for column in columns]
    return names if PATH_COLUMN in names else [PATH_COLUMN] + names


class FormatCsvShard(beam.DoFn):
    """Shard -> CsvShard: the shard's rows, sorted by path, as CSV records."""

    def __init__(self, temp_dir: str, formula_guard: bool = False):
        self.temp_dir = temp_dir
        self.formula_guard = formula_guard

    def process(self, shard, columns):
        names = column_names(columns)
        # --csv-formula-guard (transforms/csv_safety.py): which columns are text.
        guarded = guarded_columns(names, columns) if self.formula_guard else None
        rows = read_shard_by_path(shard.path)
        stem = FileSystems.join(self.temp_dir, f"csv-{uuid.uuid4().hex}")
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\r\n")
        index = []
        with FileSystems.create(stem + ".csv") as out:
            for values in rows:
                fields = [values.get(name, "") for name in names]
                writer.writerow(fields if guarded is None else guard_fields(fields, guarded))
                record = encode(buffer.getvalue())
                buffer.seek(0)
                buffer.truncate()
                out.write(record)
                index.append((values[PATH_COLUMN], len(record)))
        with FileSystems.create(stem + ".index") as out:
            for start in range(0, len(index), INDEX_CHUNK):
                pickle.dump(index[start:start + INDEX_CHUNK], out, pickle.HIGHEST_PROTOCOL)
        yield CsvShard(stem + ".csv", stem + ".index", len(rows))


def _read_index(path: str, shard_number: int) -> Iterator[tuple]:
    with open_ranged(path) as stream:
        while True:
            try:
                chunk = pickle.load(stream)
            except EOFError:
                return
            for dicom_path, length in chunk:
                yield dicom_path, shard_number, length


def merge_csv_shards(shards, columns, output_path: str, temp_path: str) -> int:
    """Write header + all shards' records in path order to ``output_path``; return rows."""
    shards = sorted(shards, key=lambda shard: shard.path)
    allow_open_files(2 * len(shards))
    # Ranged reads: on a bucket FileSystems.open would buffer up to 16 MiB per shard.
    streams = [open_ranged(shard.path) for shard in shards]
    rows = 0
    try:
        with FileSystems.create(temp_path) as out:
            out.write(encode(csv_record(column_names(columns))))
            pending = bytearray()
            indexes = [_read_index(shard.index_path, n) for n, shard in enumerate(shards)]
            for _, shard_number, length in heapq.merge(*indexes):
                pending += streams[shard_number].read(length)
                rows += 1
                if len(pending) >= COPY_BLOCK:
                    out.write(bytes(pending))
                    pending.clear()
            out.write(bytes(pending))
    finally:
        for stream in streams:
            stream.close()
    expected = sum(shard.rows for shard in shards)
    if rows != expected:
        raise RuntimeError(f"merged {rows} rows but the shards hold {expected}")
    FileSystems.rename([temp_path], [output_path])
    FileSystems.delete([path for shard in shards for path in (shard.path, shard.index_path)])
    return rows


class WriteCsv(FormatThenMerge):
    """Shards + columns -> one CSV file; outputs its row count once it is in place."""

    def __init__(self, output_path: str, temp_dir: str, formula_guard: bool = False):
        super().__init__(
            FormatCsvShard(temp_dir, formula_guard),
            functools.partial(
                merge_csv_shards,
                output_path=output_path,
                temp_path=FileSystems.join(temp_dir, "merged.csv"),
            ),
        )
