"""Tables: one k-way merge of the row shards by ``DicomPath`` writes the CSV and/or the
Parquet file, in one pass, straight from the shards.

Each shard is sorted by path, so the merge streams: it holds one record batch per open
shard and one output row group, never the table. Both formats are cut from the same
merged rows: CSV records (Python's ``csv``, RFC 4180, CRLF) and Parquet row groups typed
by the global schema (``types.arrow_schema``, values that do not parse are null and
counted). The order is the path order whatever the runner, workers or sharding, so the
files are byte-identical across runs.

Memory: an open shard costs about ``READER_COST_PER_COLUMN`` per column it holds (its
footer and one column reader per column: measured ~10 KB, far more than a batch of its
rows). The merge opens at most as many shards at once as ``MEMORY_BUDGET`` allows; with
more, it first merges them group by group into sorted runs (same format, in the run's
temp dir, private to this attempt), then merges the runs. Rows cross the disk once more
only when there are that many shards. ``benchmarks/merge_memory.py`` measures the peak
at 2,000 shards.

Retries: the merge writes to names unique to its attempt (``table-<uuid>.csv`` in the
run's temp dir) and never deletes a shard; ``finalize_tables`` renames them into place and
takes "already renamed" as done, as Beam's ``FileBasedSink.finalize_write`` does.
"""

from __future__ import annotations

import csv
import heapq
import io
import resource
import uuid
from collections import Counter
from typing import NamedTuple

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from transforms.csv_safety import guard_cell, guarded_columns
from transforms.flatten import PATH_COLUMN
from transforms.output import shard_format
from transforms.types import ColumnConverter, arrow_schema

MEMORY_BUDGET = 256 << 20  # bytes all open shards may hold together
READER_COST_PER_COLUMN = 10 * 1024  # an open shard's footer + column reader, per column
READER_COST_FIXED = 64 * 1024
MIN_BATCH_ROWS = 8
PYTHON_OVERHEAD = 4  # Python str objects of a batch vs. its Arrow bytes (measured ~3-4x)
READ_BUFFER = 64 * 1024  # per open shard: Arrow reads column chunks through this buffer
OUTPUT_ROW_GROUP_ROWS = 16384
OUTPUT_COMPRESSION = "zstd"  # read by pandas, polars, DuckDB, Spark alike
CSV_BLOCK = 1 << 20


class TableFiles(NamedTuple):
    """Where one attempt of the merge writes (temp) and where the tables go (final)."""

    csv: str | None
    parquet: str | None


def _open_write(path: str):
    return FileSystems.create(path, compression_type=CompressionTypes.UNCOMPRESSED)


def encode(text: str) -> bytes:
    # Paths that are not valid UTF-8 keep their odd bytes visible instead of failing.
    return text.encode("utf-8", "backslashreplace")


def csv_record(fields) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerow(fields)
    return buffer.getvalue()


def column_names(columns) -> list[str]:
    names = [column.name for column in columns]
    return names if PATH_COLUMN in names else [PATH_COLUMN] + names


def column_vrs(columns) -> dict:
    vrs = {column.name: column.vrs for column in columns}
    vrs.setdefault(PATH_COLUMN, frozenset({"UR"}))
    return vrs


def allow_open_files(count: int) -> None:
    """A k-way merge keeps every shard open at once; raise the soft limit if needed."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = count + 64
    if soft != resource.RLIM_INFINITY and soft < wanted:
        if hard != resource.RLIM_INFINITY:
            wanted = min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


class _Cursor:
    """One open shard, read batch by batch; yields ``(path, number, cells, index)``."""

    def __init__(self, number: int, shard, budget_per_shard: int):
        from transforms.storage import open_ranged

        self.number = number
        self.stream = open_ranged(shard.path, size=shard.size)
        self.file = pq.ParquetFile(self.stream, pre_buffer=False, buffer_size=READ_BUFFER)
        shard_format.check_metadata(self.file.metadata.metadata, shard.path)
        meta = self.file.metadata
        rows = max(1, meta.num_rows)
        bytes_per_row = sum(meta.row_group(i).total_byte_size
                            for i in range(meta.num_row_groups)) / rows
        largest_group = max((meta.row_group(i).num_rows for i in range(meta.num_row_groups)),
                            default=1)
        fit = int(budget_per_shard / max(1.0, bytes_per_row * PYTHON_OVERHEAD))
        self.batch_rows = max(MIN_BATCH_ROWS, min(largest_group, fit))
        self.columns = shard_format.value_columns(self.file.schema_arrow)

    def rows(self):
        number = self.number
        try:
            for batch in self.file.iter_batches(batch_size=self.batch_rows,
                                                columns=self.columns, use_threads=False):
                cells = shard_format.batch_cells(batch)
                for index, path in enumerate(batch.column(PATH_COLUMN).to_pylist()):
                    yield path, number, cells, index
        finally:
            self.stream.close()


class _TableWriters:
    """Receives merged rows, cuts them into chunks and writes each format's piece."""

    def __init__(self, columns, files: TableFiles, formula_guard: bool = False):
        self.names = column_names(columns)
        # --csv-formula-guard (transforms/csv_safety.py): which columns are text.
        self.guarded = guarded_columns(self.names, columns) if formula_guard else None
        self.files = files
        self.csv_out = self.parquet_out = self.parquet = None
        if files.csv:
            self.csv_out = _open_write(files.csv)
            self.csv_out.write(encode(csv_record(self.names)))
        if files.parquet:
            self.schema = arrow_schema(columns)
            vrs = column_vrs(columns)
            self.converters = {field.name: ColumnConverter(field.type, vrs[field.name])
                               for field in self.schema}
            self.parquet_out = _open_write(files.parquet)
            self.parquet = pq.ParquetWriter(self.parquet_out, self.schema,
                                            compression=OUTPUT_COMPRESSION)
        self.unparseable: Counter = Counter()
        self.rows = 0
        self._new_chunk()

    def _new_chunk(self):
        self.texts = {}  # column -> list, made when the chunk's first value arrives
        self.filled = 0

    def add(self, cells: list, index: int) -> None:
        """Row ``index`` of a batch's ``cells`` (``shard_format.batch_cells``)."""
        at = self.filled
        texts = self.texts
        for name, value in cells[index]:
            column = texts.get(name)
            if column is None:
                column = texts[name] = [None] * OUTPUT_ROW_GROUP_ROWS
            column[at] = value
        self.filled += 1
        if self.filled == OUTPUT_ROW_GROUP_ROWS:
            self.flush()

    def flush(self) -> None:
        count = self.filled
        if not count:
            return
        empty = [None] * count
        columns = [self.texts[name][:count] if name in self.texts else empty
                   for name in self.names]
        if self.csv_out is not None:
            buffer = io.StringIO()
            csv_columns = columns
            if self.guarded is not None:
                csv_columns = [[guard_cell(text) if text else text for text in texts] if guard
                               else texts for texts, guard in zip(columns, self.guarded)]
            csv.writer(buffer, lineterminator="\r\n").writerows(zip(*csv_columns))
            self.csv_out.write(encode(buffer.getvalue()))
        if self.parquet is not None:
            arrays = []
            for name, texts in zip(self.names, columns):
                array, bad = self.converters[name].convert(texts)
                arrays.append(array)
                if bad:
                    self.unparseable[name] += bad
            self.parquet.write_table(pa.Table.from_arrays(arrays, schema=self.schema),
                                     row_group_size=OUTPUT_ROW_GROUP_ROWS)
        self.rows += count
        self._new_chunk()

    def close(self) -> None:
        self.flush()
        if self.csv_out is not None:
            self.csv_out.close()
        if self.parquet is not None:
            self.parquet.close()
            self.parquet_out.close()


def reader_cost(shard) -> int:
    return READER_COST_FIXED + READER_COST_PER_COLUMN * len(shard.columns)


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


def _merged(shards, budget: int):
    """``(data, index)`` of every row of ``shards`` in path order, all open at once."""
    allow_open_files(len(shards))
    per_shard = budget // max(1, len(shards))
    cursors = [_Cursor(number, shard, per_shard) for number, shard in enumerate(shards)]
    for _, _, data, index in heapq.merge(*(cursor.rows() for cursor in cursors)):
        yield data, index


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
            union: dict = {}
            for shard in group:
                for name, vrs in shard.columns.items():
                    union[name] = union.get(name, frozenset()) | vrs
            path = FileSystems.join(temp_dir, f"run-{attempt}-{level}-{number:05d}.parquet")
            writer = shard_format.ShardWriter(path, union)
            for data, index in _merged(group, budget):
                writer.add(data, index)
            runs.append(writer.close())
            written.append(path)
        shards, level = runs, level + 1
    return shards, written


def merge_shards(shards, columns, files: TableFiles, budget: int = MEMORY_BUDGET,
                 temp_dir: str | None = None, attempt: str = "",
                 formula_guard: bool = False) -> dict:
    """Write every shard's rows, in path order, to ``files``; return the figures."""
    shards = sorted(shards, key=lambda shard: shard.path)
    expected = sum(shard.rows for shard in shards)
    last, runs = _merge_runs(shards, budget, temp_dir, attempt or uuid.uuid4().hex)
    writers = _TableWriters(columns, files, formula_guard)
    for data, index in _merged(last, budget):
        writers.add(data, index)
    writers.close()
    if runs:
        from transforms.output.cleanup import delete_paths

        delete_paths(runs)  # this attempt's own files: no other attempt reads them
    if writers.rows != expected:
        raise RuntimeError(f"merged {writers.rows} rows but the shards hold {expected}")
    result = {"rows": writers.rows}
    if files.parquet:
        result.update({
            "parquet_rows": writers.rows,
            "parquet_unparseable_values": sum(writers.unparseable.values()),
            "parquet_unparseable_by_column": dict(sorted(writers.unparseable.items())),
        })
    return result


def finalize_tables(renames: dict) -> None:
    """``{temp: final}`` renamed into place; a temp already gone whose final exists was
    renamed by an earlier attempt of this step."""
    for temp, final in sorted(renames.items()):
        if FileSystems.exists(temp):
            FileSystems.rename([temp], [final])
        elif not FileSystems.exists(final):
            raise FileNotFoundError(f"neither {temp} nor {final} exists")


def _merge_step(_, shards, columns, final: TableFiles, temp_dir: str,
                formula_guard: bool = False) -> dict:
    from transforms import beam_internals

    beam_internals.prepare_filesystems()
    attempt = uuid.uuid4().hex
    temp = TableFiles(
        FileSystems.join(temp_dir, f"table-{attempt}.csv") if final.csv else None,
        FileSystems.join(temp_dir, f"table-{attempt}.parquet") if final.parquet else None,
    )
    figures = merge_shards(shards, columns, temp, temp_dir=temp_dir, attempt=attempt,
                           formula_guard=formula_guard)
    figures["renames"] = {t: f for t, f in zip(temp, final) if t}
    return figures


def _finalize_step(figures: dict) -> dict:
    from transforms import beam_internals

    beam_internals.prepare_filesystems()
    figures = dict(figures)
    finalize_tables(figures.pop("renames"))
    return figures


class WriteTables(beam.PTransform):
    """(shards, columns) -> one dict of figures (``rows``, ``parquet_*``), emitted once
    the tables are in place."""

    def __init__(self, final: TableFiles, temp_dir: str, csv_formula_guard: bool = False):
        super().__init__()
        self.final = final
        self.temp_dir = temp_dir
        self.csv_formula_guard = csv_formula_guard

    def expand(self, shards_and_columns):
        shards, columns = shards_and_columns
        return (
            shards.pipeline
            | "Once" >> beam.Create([None])
            | "Merge" >> beam.Map(_merge_step, beam.pvalue.AsList(shards),
                                  beam.pvalue.AsSingleton(columns), self.final, self.temp_dir,
                                  self.csv_formula_guard)
            | "Finalize" >> beam.Map(_finalize_step)
        )
