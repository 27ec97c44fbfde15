"""Tables: one k-way merge of the row shards by ``DicomPath`` writes the CSV and/or the
Parquet file, in one pass, straight from the shards.

Each shard is sorted by path, so the merge streams: it holds one record batch per open
shard and one output chunk (``table_chunks.py``), never the table. Both formats are cut
from the same chunks: CSV records (RFC 4180 as Python's ``csv`` writes them, CRLF) and
Parquet row groups typed by the global schema (``types.arrow_schema``, values that do not
parse are null and counted). The order is the path order whatever the runner, workers or
sharding, so the files are byte-identical across runs. The same pass computes the
report's table figures (``table_stats.TableStats``) from the chunks it writes.

Memory: an open shard costs its footer, a few column readers, the row group being read
(``reader_cost``) and one batch (sized from the shard's bytes per row). The merge opens
at most as many shards at once as ``MEMORY_BUDGET`` allows; with more, it first merges
them group by group into sorted runs (same format, in the run's temp dir, private to
this attempt), then merges the runs. Rows cross the disk once more only when there are
that many shards. ``benchmarks/merge_memory.py`` measures the peak at 2,000 shards.

Retries: the merge writes to names unique to its attempt (``table-<uuid>.csv`` in the
run's temp dir) and never deletes a shard; ``finalize_tables`` renames them into place and
takes "already renamed" as done, as Beam's ``FileBasedSink.finalize_write`` does.
"""

from __future__ import annotations

import heapq
import resource
import uuid
from collections import Counter
from typing import NamedTuple

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from transforms.common.atomic_files import finalize_tables, open_write
from transforms.common.tags import COLUMNS, TABLE_FIGURES
from transforms.output.columns import ComputeColumns, UnionColumns
from transforms.output.documents import JsonLines, split_json
from transforms.output.keyword_names import SEED, output_names, renamed
from transforms.output.nested_file import WriteNestedFile
from transforms.content.csv_safety import guarded_columns
from transforms.common.rows import JSON_COLUMN, PATH_COLUMN, is_grouping
from transforms.reading.naming import order_columns
from transforms.output import shard_format
from transforms.output.table_chunks import (
    ChunkBuilder, ChunkColumns, add_to_stats, column_names, column_vrs, csv_record, csv_text,
    without_keys)
from transforms.output.table_stats import TableStats
from transforms.output.types import ColumnConverter, arrow_schema

MEMORY_BUDGET = 256 << 20  # bytes all open shards may hold together
READER_COST = 256 * 1024  # an open shard's footer, column readers and read buffers
MIN_BATCH_ROWS = 8
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


def allow_open_files(count: int) -> None:
    """A k-way merge keeps every shard open at once; raise the soft limit if needed."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = count + 64
    if soft != resource.RLIM_INFINITY and soft < wanted:
        if hard != resource.RLIM_INFINITY:
            wanted = min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


class _Cursor:
    """One open shard, read batch by batch; yields ``(path, number, batch, offsets,
    index)`` with the batch's keys renumbered by ``numbering`` ({(column, VR): number})."""

    def __init__(self, number: int, shard, budget_per_shard: int, numbering):
        from transforms.inputs.ranged import open_ranged

        self.number = number
        self.stream = open_ranged(shard.path, size=shard.size)
        # Unbuffered: a column chunk is read whole (a row group is at most about
        # ROW_GROUP_BYTES). With a 64 KiB buffer_size, Arrow failed on the benchmark's
        # shards ("Cannot shrink read buffer if buffered data remains").
        self.file = shard_format.open_shard(self.stream, shard.path, pre_buffer=False)
        _, keys = shard_format.check_keys(self.file.metadata.metadata, shard.path)
        # Grouping cells (series keys a tag selection leaves out) are no columns.
        self.grouping = np.array([is_grouping(name) for name, _ in keys] or [False])
        try:
            self.renumber = np.array([0 if hidden else numbering[key] for key, hidden
                                      in zip(keys, self.grouping)] or [0], np.int32)
        except KeyError as exc:
            raise RuntimeError(f"{shard.path}: column {exc} is not in the table") from exc
        meta = self.file.metadata
        rows = max(1, meta.num_rows)
        bytes_per_row = sum(meta.row_group(i).total_byte_size
                            for i in range(meta.num_row_groups)) / rows
        largest_group = max((meta.row_group(i).num_rows for i in range(meta.num_row_groups)),
                            default=1)
        fit = int(budget_per_shard / max(1.0, 2 * bytes_per_row))
        self.batch_rows = max(MIN_BATCH_ROWS, min(largest_group, fit))

    def rows(self):
        number = self.number
        try:
            for batch in self.file.iter_batches(batch_size=self.batch_rows, use_threads=False):
                cells = shard_format.batch_cell_rows(batch)
                if self.grouping.any():
                    cells = without_keys(cells, self.grouping)
                cells = cells._replace(keys=self.renumber[cells.keys])
                offsets = cells.offsets.tolist()
                for index, path in enumerate(cells.paths):
                    yield path, number, cells, offsets, index
        finally:
            self.stream.close()


class _TableWriters:
    """Receives merged rows, cuts them into chunks and writes each format's piece."""

    def __init__(self, columns, files: TableFiles, formula_guard: bool = False,
                 stats: TableStats | None = None):
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
            self.csv_out.write(csv_record(self.written_names).encode("utf-8", "backslashreplace"))
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
        chunk, json_texts = split_json(self.chunk.take(), self.json_key)
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


class _RunWriter:
    """Receives merged rows and writes them as one shard (an intermediate run). Runs are
    read only by this merge, which needs no per-cell VRs: a run has one key per column,
    and its ``ShardInfo`` carries the union of its shards' columns and VRs."""

    def __init__(self, path: str, columns: dict):
        self.columns = columns
        names = [name for name in order_columns(columns) if name != PATH_COLUMN]
        self.numbering = _ByColumn({name: number for number, name in enumerate(names)})
        self.writer = shard_format.ShardWriter(path, [(name, None) for name in names])
        self.chunk = ChunkBuilder()

    def add(self, batch, offsets: list, index: int) -> None:
        self.chunk.add(batch, offsets, index)
        if len(self.chunk) >= shard_format.ROW_GROUP_ROWS:
            self.writer.write(self.chunk.take())

    def close(self):
        if len(self.chunk):
            self.writer.write(self.chunk.take())
        return self.writer.close()._replace(columns=self.columns)


def reader_cost(shard) -> int:
    """What an open shard holds besides its batch: footer, readers, a row group's bytes."""
    stored = shard.size if shard.size is not None else shard_format.ROW_GROUP_BYTES
    return READER_COST + min(stored, shard_format.ROW_GROUP_BYTES)


def groups_within(shards, budget: int) -> list[list]:
    """Consecutive groups of shards whose open readers fit ``budget`` (at least two each)."""
    groups, current, cost = [], [], 0
    for shard in shards:
        if len(current) >= 2 and cost + reader_cost(shard) > budget:
            groups.append(current)
            current, cost = [], 0
        current.append(shard)
        cost += reader_cost(shard)
    if current:
        groups.append(current)
    return groups


def _merged(shards, budget: int, numbering: dict):
    """``(batch, offsets, index)`` of every row of ``shards`` in path order, all open at
    once; keys renumbered by ``numbering``."""
    allow_open_files(len(shards))
    per_shard = max(0, budget - sum(map(reader_cost, shards))) // max(1, len(shards))
    cursors = [_Cursor(number, shard, per_shard, numbering)
               for number, shard in enumerate(shards)]
    for _, _, batch, offsets, index in heapq.merge(*(cursor.rows() for cursor in cursors)):
        yield batch, offsets, index


class _ByColumn(dict):
    """(column, VR) -> a column number, from ``{column: number}``."""

    def __init__(self, numbering: dict):
        super().__init__()
        self.numbering = numbering

    def __missing__(self, key):
        return self.numbering[key[0]]


def _union_columns(group) -> dict:
    union = UnionColumns()
    columns = union.create_accumulator()
    for shard in group:
        union.add_input(columns, shard.columns)
    return columns


def _merge_runs(shards, budget: int, temp_dir: str | None, attempt: str) -> tuple[list, list]:
    """Merge groups of shards into sorted runs until one group fits ``budget``; returns
    the shards to merge last and the runs written (this attempt's own temp files)."""
    written = []
    level = 0
    while len(groups := groups_within(shards, budget)) > 1:
        if temp_dir is None:
            raise ValueError(f"{len(shards)} shards exceed the merge budget: need a temp dir")
        runs = []
        for number, group in enumerate(groups):
            if len(group) == 1:
                runs.append(group[0])
                continue
            path = FileSystems.join(temp_dir, f"run-{attempt}-{level}-{number:05d}.parquet")
            writer = _RunWriter(path, _union_columns(group))
            for batch, offsets, index in _merged(group, budget, writer.numbering):
                writer.add(batch, offsets, index)
            runs.append(writer.close())
            written.append(path)
        shards, level = runs, level + 1
    return shards, written


def merge_shards(shards, columns, files: TableFiles, budget: int = MEMORY_BUDGET,
                 temp_dir: str | None = None, attempt: str = "",
                 formula_guard: bool = False, stats: TableStats | None = None) -> dict:
    """Write every shard's rows, in path order, to ``files``; return the figures. With
    ``stats``, the report's figures of the table are added to it on the way."""
    shards = sorted(shards, key=lambda shard: shard.path)
    expected = sum(shard.rows for shard in shards)
    last, runs = _merge_runs(shards, budget, temp_dir, attempt or uuid.uuid4().hex)
    if files.nested:
        raise ValueError("the nested table is nested_file.WriteNestedFile's")
    writers = _TableWriters(columns, files, formula_guard, stats)
    for batch, offsets, index in _merged(last, budget, _ByColumn(writers.numbering)):
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


def _merge_step(_, shards, columns, final: TableFiles, temp_dir: str,
                formula_guard: bool = False) -> dict:
    from transforms.inputs import storage

    storage.prepare_filesystems()
    attempt = uuid.uuid4().hex
    temp = TableFiles(
        FileSystems.join(temp_dir, f"table-{attempt}.csv") if final.csv else None,
        FileSystems.join(temp_dir, f"table-{attempt}.parquet") if final.parquet else None,
        final.naming, FileSystems.join(temp_dir, f"table-{attempt}.jsonl") if final.jsonl else None)
    stats = TableStats()
    figures = merge_shards(shards, columns, temp, temp_dir=temp_dir, attempt=attempt,
                           formula_guard=formula_guard, stats=stats)
    stats.source = final.csv or final.parquet
    figures["renames"] = {t: f for t, f in zip(temp.files(), final.files()) if t}
    figures[TABLE_STATS] = stats.as_dict()
    return figures


def finalize_step(figures: dict, nested: dict | None = None) -> dict:
    """Renames the tables (``renames`` of ``figures`` and ``nested``) into place; the rest."""
    from transforms.inputs import storage

    storage.prepare_filesystems()
    figures, nested = dict(figures), dict(nested or {})
    finalize_tables({**figures.pop("renames"), **nested.pop("renames", {})})
    return {**figures, **nested}


class WriteTables(beam.PTransform):
    """Row shards -> {COLUMNS: the table's columns, TABLE_FIGURES: one dict of figures
    (``rows``, ``parquet_*``, ``nested_*`` from ``nested_file.py``, the report's
    ``TABLE_STATS``), emitted once the tables are in place}."""

    def __init__(self, final: TableFiles, temp_dir: str, csv_formula_guard: bool = False):
        super().__init__()
        self.final = final
        self.temp_dir = temp_dir
        self.csv_formula_guard = csv_formula_guard

    def expand(self, shards):
        columns = shards | "Columns" >> ComputeColumns()
        nested = (beam.pvalue.AsSingleton(shards | "NestedFile" >> WriteNestedFile(
            self.final.nested, self.temp_dir)) if self.final.nested else None)
        figures = (
            shards.pipeline
            | "Once" >> beam.Create([None])
            | "Merge" >> beam.Map(_merge_step, beam.pvalue.AsList(shards),
                                  beam.pvalue.AsSingleton(columns), self.final,
                                  self.temp_dir, self.csv_formula_guard)
            | "Finalize" >> beam.Map(finalize_step, nested)
        )
        return {COLUMNS: columns, TABLE_FIGURES: figures}
