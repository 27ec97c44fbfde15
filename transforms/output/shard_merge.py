"""The k-way merge of row shards by ``DicomPath``, within a memory budget: what the table
writers (``tables.py``: one file; ``table_parts.py``: one path range per part) read rows
through.

Each shard is sorted by path, so the merge streams: it holds one record batch per open
shard, never the table. Equal paths come out in the order of the shards given (the
writers sort them by name), so the order never depends on the runner or the sharding.
A shard may be given whole (``ShardInfo``) or as a slice of its rows (``ShardSlice``,
rows ``start:stop`` in its path order): only the row groups that hold them are read.

Memory: an open shard costs its footer, a few column readers, the row group being read
(``reader_cost``) and one batch (sized from the shard's bytes per row). The merge opens
at most as many shards at once as ``MEMORY_BUDGET`` allows; with more, it first merges
them group by group into sorted runs (same format, in the run's temp dir, private to
this attempt), then merges the runs. Rows cross the disk once more only when there are
that many shards. ``benchmarks/merge_memory.py`` measures the peak at 2,000 shards.
"""

from __future__ import annotations

import heapq
import resource
from typing import NamedTuple

import numpy as np
from apache_beam.io.filesystems import FileSystems

from transforms.common.rows import PATH_COLUMN, is_grouping
from transforms.output import shard_format
from transforms.output.columns import UnionColumns
from transforms.output.table_chunks import ChunkBuilder, without_keys
from transforms.reading.naming import order_columns

MEMORY_BUDGET = 256 << 20  # bytes all open shards may hold together
READER_COST = 256 * 1024  # an open shard's footer, column readers and read buffers
MIN_BATCH_ROWS = 8


def allow_open_files(count: int) -> None:
    """A k-way merge keeps every shard open at once; raise the soft limit if needed."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = count + 64
    if soft != resource.RLIM_INFINITY and soft < wanted:
        if hard != resource.RLIM_INFINITY:
            wanted = min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def open_shard_file(path: str, size):
    """A shard's stream (ranged reads) and its ``ParquetFile``; the caller closes the stream."""
    from transforms.inputs.ranged import open_ranged

    stream = open_ranged(path, size=size)
    # Unbuffered: a column chunk is read whole (a row group is at most about
    # ROW_GROUP_BYTES). With a 64 KiB buffer_size, Arrow failed on the benchmark's
    # shards ("Cannot shrink read buffer if buffered data remains").
    return stream, shard_format.open_shard(stream, path, pre_buffer=False)


class ShardSlice(NamedTuple):
    """Rows ``start:stop`` of a shard (in its path order): ``ShardInfo``'s fields but its
    columns (thousands of names in a wide archive, for every slice of every part); a
    merge of slices that writes runs reads them from the shard's footer."""

    path: str
    rows: int  # the slice's
    size: int | None
    start: int
    stop: int
    columns: None = None

    @classmethod
    def of(cls, shard, start: int, stop: int) -> "ShardSlice":
        return cls(shard.path, stop - start, shard.size, start, stop)


class _Cursor:
    """One open shard (or slice), read batch by batch; yields ``(path, number, batch,
    offsets, index)`` with the batch's keys renumbered by ``numbering`` ({(column, VR):
    number})."""

    def __init__(self, number: int, shard, budget_per_shard: int, numbering):
        self.number = number
        self.stream, self.file = open_shard_file(shard.path, shard.size)
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
        # The row groups that hold the rows asked for, and the first one's first row.
        self.start = getattr(shard, "start", 0)
        self.stop = getattr(shard, "stop", meta.num_rows)
        self.groups, self.first, row = [], None, 0
        for group in range(meta.num_row_groups):
            group_rows = meta.row_group(group).num_rows
            if row < self.stop and row + group_rows > self.start:
                self.groups.append(group)
                self.first = row if self.first is None else self.first
            row += group_rows

    def rows(self):
        number = self.number
        if not self.groups:
            self.stream.close()
            return
        row = self.first
        try:
            for batch in self.file.iter_batches(batch_size=self.batch_rows,
                                                row_groups=self.groups, use_threads=False):
                low, high = max(0, self.start - row), min(batch.num_rows, self.stop - row)
                row += batch.num_rows
                if low >= high:
                    continue
                if high - low < batch.num_rows:  # a slice's first or last rows
                    batch = batch.slice(low, high - low)
                cells = shard_format.batch_cell_rows(batch)
                if self.grouping.any():
                    cells = without_keys(cells, self.grouping)
                cells = cells._replace(keys=self.renumber[cells.keys])
                offsets = cells.offsets.tolist()
                for index, path in enumerate(cells.paths):
                    yield path, number, cells, offsets, index
        finally:
            self.stream.close()


class _RunWriter:
    """Receives merged rows and writes them as one shard (an intermediate run). Runs are
    read only by this merge, which needs no per-cell VRs: a run has one key per column,
    and its ``ShardInfo`` carries the union of its shards' columns and VRs."""

    def __init__(self, path: str, columns: dict):
        self.columns = columns
        names = [name for name in order_columns(columns) if name != PATH_COLUMN]
        self.numbering = ByColumn({name: number for number, name in enumerate(names)})
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


def merged(shards, budget: int, numbering: dict):
    """``(batch, offsets, index)`` of every row of ``shards`` in path order, all open at
    once; keys renumbered by ``numbering``."""
    allow_open_files(len(shards))
    per_shard = max(0, budget - sum(map(reader_cost, shards))) // max(1, len(shards))
    cursors = [_Cursor(number, shard, per_shard, numbering)
               for number, shard in enumerate(shards)]
    for _, _, batch, offsets, index in heapq.merge(*(cursor.rows() for cursor in cursors)):
        yield batch, offsets, index


class ByColumn(dict):
    """(column, VR) -> a column number, from ``{column: number}``."""

    def __init__(self, numbering: dict):
        super().__init__()
        self.numbering = numbering

    def __missing__(self, key):
        return self.numbering[key[0]]


def _union_columns(group) -> dict:
    """The union of a group's columns; a slice's are read from its shard's footer."""
    union = UnionColumns()
    columns = union.create_accumulator()
    for shard in group:
        found = shard.columns
        if found is None:
            found = shard_format.read_info(shard.path, shard.size).columns
        union.add_input(columns, found)
    return columns


def merge_runs(shards, budget: int, temp_dir: str | None, attempt: str) -> tuple[list, list]:
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
            for batch, offsets, index in merged(group, budget, writer.numbering):
                writer.add(batch, offsets, index)
            runs.append(writer.close())
            written.append(path)
        shards, level = runs, level + 1
    return shards, written


