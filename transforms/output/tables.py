"""Tables: the rows of row shards (or of slices of them), merged by ``DicomPath``
(``shard_merge.py``), written as the CSV, the JSON lines and/or the flat Parquet file in
one pass (``merge_shards``). ``write_tables.py`` decides who calls it: a worker per part
of the path order for the CSV and JSON lines (``table_parts.py``), one worker for the
Parquet file (``merge_step``).

The writers hold one output chunk (``table_chunks.py``), never the table. Every format
is cut from the same chunks: CSV records (RFC 4180 as Python's ``csv`` writes them,
CRLF), JSON lines, and Parquet row groups typed by the global schema
(``types.arrow_schema``, values that do not parse are null and counted). The order is
the path order whatever the runner, workers or sharding, and a row's CSV record and JSON
line depend on the row and the columns only, so the files are byte-identical across
runs and however they are cut into parts. The same pass computes the report's table
figures (``table_stats.TableStats``) from the chunks it writes.

Retries: the merge writes to names unique to its attempt (``table-<uuid>.parquet`` in
the run's temp dir) and never deletes a shard; ``finalize_tables`` renames them into place and
takes "already renamed" as done, as Beam's ``FileBasedSink.finalize_write`` does.
"""

from __future__ import annotations

import uuid
from collections import Counter
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from transforms.common.atomic_files import finalize_tables, open_write
from transforms.output.documents import JsonLines, split_json
from transforms.output.keyword_names import SEED, output_names, renamed
from transforms.content.csv_safety import guarded_columns
from transforms.common.rows import JSON_COLUMN
from transforms.output.shard_merge import MEMORY_BUDGET, ByColumn, merge_runs, merged
from transforms.output.table_chunks import (
    ChunkBuilder, ChunkColumns, add_to_stats, column_names, column_vrs, csv_record, csv_text)
from transforms.output.table_stats import TableStats
from transforms.output.types import ColumnConverter, arrow_schema

OUTPUT_ROW_GROUP_ROWS = 16384
OUTPUT_CHUNK_BYTES = 64 << 20  # a chunk's CSV text (mostly commas on wide tables)
TEXT_CHUNK_BYTES = 8 << 20  # the same when no Parquet table is written (_TableWriters)
OUTPUT_COMPRESSION = "zstd"  # read by pandas, polars, DuckDB, Spark alike
TABLE_STATS = "table_stats"  # the figures' key of the report's table figures


class TableFiles(NamedTuple):
    """Where one attempt of the merge writes (temp) and where the tables go (final),
    with ``--column-names`` (``keyword_names.py``)."""

    csv: str | None
    parquet: str | None
    naming: str = SEED
    jsonl: str | None = None  # --format json: scan.jsonl (documents.py)
    nested: str | None = None  # --format nested: scan.nested.parquet (nested_file.py)

    def files(self) -> tuple:
        return self.csv, self.parquet, self.jsonl, self.nested


class _TableWriters:
    """Receives merged rows, cuts them into chunks and writes each format's piece."""

    def __init__(self, columns, files: TableFiles, formula_guard: bool = False,
                 stats: TableStats | None = None, header: bool = True):
        self.names = column_names(columns)  # seed names: what shards and types know
        self.written_names = output_names(self.names, files.naming)
        self.numbering = {name: number for number, name in enumerate(self.names)}
        self.numbering[JSON_COLUMN] = self.json_key = len(self.names)  # never a column
        self.jsonl = JsonLines(open_write(files.jsonl)) if files.jsonl else None
        # --csv-formula-guard (transforms/content/csv_safety.py): which columns are text.
        self.guarded = (np.array(guarded_columns(self.names, columns), bool)
                        if formula_guard else None)
        self.files = files
        self.stats = stats
        if stats is not None:
            stats.start(self.written_names, files.csv or files.parquet)
        self.csv_out = self.parquet_out = self.parquet = None
        if files.csv:
            self.csv_out = open_write(files.csv)
            if header:  # not in a part after the first (table_parts.py)
                self.csv_out.write(csv_record(self.written_names).encode(
                    "utf-8", "backslashreplace"))
        if files.parquet:
            seed_schema = arrow_schema(columns)
            vrs = column_vrs(columns)
            self.converters = [ColumnConverter(field.type, vrs[field.name])
                               for field in seed_schema]
            self.schema = renamed(seed_schema, self.written_names)
            self.parquet_out = open_write(files.parquet)
            self.parquet = pq.ParquetWriter(self.parquet_out, self.schema,
                                            compression=OUTPUT_COMPRESSION)
        # A chunk is a row group of the Parquet table; without one it is cut smaller:
        # Arrow's default pool gives a freed block of 32 MB or more back to the kernel, so
        # large chunks fault their memory in afresh (the 50,000-file benchmark's merge:
        # 507,000 page faults and 1.5 s of system time at 64 MB, 105,000 and 0.7 s at 8 MB;
        # benchmarks/README.md). The CSV and JSON lines do not depend on the chunks.
        chunk_bytes = OUTPUT_CHUNK_BYTES if files.parquet else TEXT_CHUNK_BYTES
        self.chunk_rows = max(1, min(OUTPUT_ROW_GROUP_ROWS, chunk_bytes // (2 * len(self.names))))
        self.unparseable: Counter = Counter()
        self.rows = 0
        self.chunk = ChunkBuilder()

    def add(self, batch, offsets: list, index: int) -> None:
        self.chunk.add(batch, offsets, index)
        if len(self.chunk) >= self.chunk_rows:
            self.flush()

    def flush(self) -> None:
        if not len(self.chunk):
            return
        chunk, json_texts = split_json(self.chunk.take(), self.json_key,
                                       texts_wanted=self.jsonl is not None)
        if self.jsonl is not None:
            self.jsonl.write(chunk.paths, json_texts)
        width = len(self.names)
        if self.csv_out is not None:
            self.csv_out.write(csv_text(chunk, width, self.guarded))
        if self.parquet is not None or self.stats is not None:
            columns = ChunkColumns(chunk, width)
            group = self._write_parquet(columns) if self.parquet is not None else None
            if self.stats is not None:
                # The report describes the CSV when there is one, else the typed Parquet
                # (where a value that does not parse is null, so not filled).
                if self.csv_out is not None or self.parquet is None:
                    add_to_stats(self.stats, columns, self.numbering)
                else:
                    self.stats.add_batch(group)
        self.rows += len(chunk.paths)

    def _write_parquet(self, columns: ChunkColumns) -> pa.RecordBatch:
        arrays = []
        for number, converter in enumerate(self.converters):
            array, bad = columns.converted(number, converter)
            arrays.append(array)
            if bad:
                self.unparseable[self.written_names[number]] += bad
        group = pa.RecordBatch.from_arrays(arrays, schema=self.schema)
        self.parquet.write_batch(group, row_group_size=OUTPUT_ROW_GROUP_ROWS)
        return group

    def close(self) -> None:
        self.flush()
        if self.csv_out is not None:
            self.csv_out.close()
        if self.parquet is not None:
            self.parquet.close()
            self.parquet_out.close()
        if self.jsonl is not None:
            self.jsonl.close()


def merge_shards(shards, columns, files: TableFiles, budget: int = MEMORY_BUDGET,
                 temp_dir: str | None = None, attempt: str = "",
                 formula_guard: bool = False, stats: TableStats | None = None,
                 header: bool = True) -> dict:
    """Write every shard's rows (shards or ``shard_merge.ShardSlice``s), in path order,
    to ``files``; return the figures. With ``stats``, the report's figures of the table
    are added to it on the way; without ``header``, the CSV has no header line."""
    shards = sorted(shards, key=lambda shard: shard.path)
    expected = sum(shard.rows for shard in shards)
    last, runs = merge_runs(shards, budget, temp_dir, attempt or uuid.uuid4().hex)
    if files.nested:
        raise ValueError("the nested table is nested_file.WriteNestedFile's")
    writers = _TableWriters(columns, files, formula_guard, stats, header)
    for batch, offsets, index in merged(last, budget, ByColumn(writers.numbering)):
        writers.add(batch, offsets, index)
    writers.close()
    if runs:
        from transforms.output.cleanup import delete_paths

        delete_paths(runs)  # this attempt's own files: no other attempt reads them
    if writers.rows != expected:
        raise RuntimeError(f"merged {writers.rows} rows but the shards hold {expected}")
    result = {"rows": writers.rows, **(writers.jsonl.figures() if writers.jsonl else {})}
    if files.parquet:
        result.update({
            "parquet_rows": writers.rows,
            "parquet_unparseable_values": sum(writers.unparseable.values()),
            "parquet_unparseable_by_column": dict(sorted(writers.unparseable.items())),
        })
    return result


def merge_step(_, shards, columns, final: TableFiles, temp_dir: str,
               formula_guard: bool = False, with_stats: bool = True) -> dict:
    """One worker merges every shard into the tables of ``final`` (under names of this
    attempt, renamed by ``finalize_step``); with the report's figures if ``with_stats``."""
    from transforms.inputs import storage

    storage.prepare_filesystems()
    attempt = uuid.uuid4().hex
    temp = TableFiles(
        FileSystems.join(temp_dir, f"table-{attempt}.csv") if final.csv else None,
        FileSystems.join(temp_dir, f"table-{attempt}.parquet") if final.parquet else None,
        final.naming, FileSystems.join(temp_dir, f"table-{attempt}.jsonl") if final.jsonl else None)
    stats = TableStats() if with_stats else None
    figures = merge_shards(shards, columns, temp, temp_dir=temp_dir, attempt=attempt,
                           formula_guard=formula_guard, stats=stats)
    figures["renames"] = {t: f for t, f in zip(temp.files(), final.files()) if t}
    if stats is not None:
        stats.source = final.csv or final.parquet
        figures[TABLE_STATS] = stats.as_dict()
    return figures


def finalize_step(figures, *more):
    """Renames the tables (the ``renames`` of each dict of figures) into place; returns
    the figures joined, without the renames."""
    from transforms.inputs import storage

    storage.prepare_filesystems()
    joined, renames = {}, {}
    for each in (figures, *more):
        each = dict(each)
        renames.update(each.pop("renames", {}))
        joined.update(each)
    finalize_tables(renames)
    return joined
