"""``scan.nested.parquet``: the nested table as one file (``--format nested`` with a file
output; ``nested.py`` says what it holds), its rows made in parallel and only merged on
one worker.

1. ``NestedUnion`` (``documents.py``): the schema, each row shard's union, combined.
2. ``ConvertShards``, each row shard in parallel: its rows' DICOM JSON as record batches
   of that schema (``nested_rows.NestedRows``), in the shard's order (by path), written
   as an Arrow IPC stream (LZ4) under a name unique to the attempt in the run's temp
   dir, each row's JSON length in one more column (``JSON_BYTES``).
3. ``WriteFile``, one worker: merges the converted shards by ``DicomPath``, equal paths
   in the order of the shards by name, as the table merge does (``tables.py``), and
   writes row groups of at most ``GROUP_ROWS`` rows and ``GROUP_JSON_BYTES`` of their
   JSON. The cuts depend on the rows alone, never on the sharding, so the file is
   byte-identical across runs, runners and retries. It writes under a name of its
   attempt; the table step's ``Finalize`` renames it into place with the other tables.

Memory: step 2 holds one row group of a shard's JSON and its rows; step 3 one or two
converted batches per shard (``CONVERT_ROWS``) and one row group. Converted streams are
their attempt's own; the run's cleanup deletes the temp dir with them.
"""

from __future__ import annotations

import heapq
import uuid
from collections import deque
from typing import NamedTuple

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from transforms.common.atomic_files import open_write
from transforms.common.rows import PATH_COLUMN
from transforms.output.documents import NestedUnion, shard_json
from transforms.output.nested import NestedSchema
from transforms.output.nested_rows import NestedRows, unparseable_figures

NESTED_COMPRESSION = "zstd"
JSON_BYTES = "_json_bytes"  # a converted row's JSON length: where row groups are cut
# A converted batch: at most this many rows and this much of their JSON. Step 3 holds
# one or two per shard (5,000 rows each by default: 200 at a million files), so they
# stay small; as Arrow a batch takes about 0.7 times its rows' JSON.
CONVERT_ROWS = 256
CONVERT_JSON_BYTES = 1 << 20
GROUP_ROWS = 16384  # rows per row group of the file, at most
GROUP_JSON_BYTES = 64 << 20  # and their JSON, at most
_IPC_OPTIONS = pa.ipc.IpcWriteOptions(compression="lz4")


class ConvertedShard(NamedTuple):
    """One row shard's rows as converted batches: where, how many, and the values that
    did not parse, by column."""

    shard: str
    path: str
    rows: int
    unparseable: dict


def _schemas(union_data: dict) -> tuple[NestedSchema, pa.Schema]:
    union = NestedSchema.from_data(union_data)
    return union, union.arrow_schema()


def _batches(shard):
    """``(paths, texts)`` of a shard in batches of at most ``CONVERT_ROWS`` rows and
    ``CONVERT_JSON_BYTES`` of JSON (an RT Structure Set's line is megabytes)."""
    for paths, texts in shard_json(shard.path, shard.size):
        start, size = 0, 0
        for end, text in enumerate(texts):
            if end > start and (end - start >= CONVERT_ROWS or size >= CONVERT_JSON_BYTES):
                yield paths[start:end], texts[start:end]
                start, size = end, 0
            size += len(text)
        if start < len(texts):
            yield paths[start:], texts[start:]


def convert_shard(shard, union_data: dict, temp_dir: str) -> ConvertedShard:
    """Step 2 for one shard (``ShardInfo``)."""
    from transforms.inputs import storage

    storage.prepare_filesystems()
    union, schema = _schemas(union_data)
    converter = NestedRows(schema, union)
    stored = schema.append(pa.field(JSON_BYTES, pa.int64()))
    path = FileSystems.join(temp_dir, f"nested-{uuid.uuid4().hex}.arrows")
    out = open_write(path)
    rows = 0
    with pa.ipc.new_stream(out, stored, options=_IPC_OPTIONS) as writer:
        for paths, texts in _batches(shard):
            batch = converter.batch(paths, texts)
            writer.write_batch(pa.RecordBatch.from_arrays(
                [*batch.columns, pa.array([len(text) for text in texts], pa.int64())],
                schema=stored))
            rows += len(paths)
    out.close()
    return ConvertedShard(shard.path, path, rows, dict(converter.unparseable))


class _Converted:
    """One converted shard, read batch by batch: its rows as merge keys, and the batches
    that hold rows not yet written."""

    def __init__(self, number: int, converted: ConvertedShard):
        from transforms.inputs.ranged import open_ranged

        self.number = number
        self.stream = open_ranged(converted.path)
        self.reader = pa.ipc.open_stream(self.stream)
        self.held: deque = deque()  # (serial, batch), oldest first

    def rows(self):
        """``(path, shard number, batch serial, row, JSON bytes)`` of every row."""
        number = self.number
        try:
            for serial, batch in enumerate(self.reader):
                self.held.append((serial, batch))
                sizes = batch.column(JSON_BYTES).to_pylist()
                for row, path in enumerate(batch.column(PATH_COLUMN).to_pylist()):
                    yield path, number, serial, row, sizes[row]
        finally:
            self.stream.close()

    def batch(self, serial: int) -> pa.RecordBatch:
        for held_serial, batch in self.held:
            if held_serial == serial:
                return batch
        raise RuntimeError(f"batch {serial} of shard {self.number} is gone")

    def release_before(self, serial: int) -> None:
        while self.held and self.held[0][0] < serial:
            self.held.popleft()


def _group(readers: list, rows: list) -> pa.Table:
    """The merged ``rows`` (``(number, serial, row)``) as one table."""
    sources, base, indices = {}, 0, []
    batches = []
    for number, serial, row in rows:
        start = sources.get((number, serial))
        if start is None:
            batch = readers[number].batch(serial)
            start = sources[(number, serial)] = base
            base += batch.num_rows
            batches.append(batch)
        indices.append(start + row)
    table = pa.Table.from_batches(batches).drop_columns([JSON_BYTES])
    # The last rows of each shard are the newest it needs: older batches are done.
    for number, serial, _ in rows:
        readers[number].release_before(serial)
    return table.take(pa.array(indices, pa.int64()))


def write_file(_, converted: list, union_data: dict, final: str, temp_dir: str) -> dict:
    """Step 3: the file under a name of this attempt; its figures and its rename."""
    from transforms.inputs import storage

    storage.prepare_filesystems()
    union, schema = _schemas(union_data)
    converted = sorted(converted, key=lambda shard: shard.shard)  # the table merge's order
    readers = [_Converted(number, shard) for number, shard in enumerate(converted)]
    temp = FileSystems.join(temp_dir, f"table-{uuid.uuid4().hex}.nested.parquet")
    out = open_write(temp)
    writer = pq.ParquetWriter(out, schema, compression=NESTED_COMPRESSION)
    group, size, written = [], 0, 0
    for _, number, serial, row, json_bytes in heapq.merge(*(r.rows() for r in readers)):
        if group and (len(group) >= GROUP_ROWS or size + json_bytes > GROUP_JSON_BYTES):
            writer.write_table(_group(readers, group), row_group_size=len(group))
            written += len(group)
            group, size = [], 0
        group.append((number, serial, row))
        size += json_bytes
    if group:
        writer.write_table(_group(readers, group), row_group_size=len(group))
        written += len(group)
    writer.close()
    out.close()
    expected = sum(shard.rows for shard in converted)
    if written != expected:
        raise RuntimeError(f"wrote {written} nested rows but the shards hold {expected}")
    return {"renames": {temp: final}, "nested_rows": written, "nested_columns": len(schema),
            "nested_json_columns": union.json_columns(),
            **unparseable_figures(shard.unparseable for shard in converted)}


class WriteNestedFile(beam.PTransform):
    """Row shards -> one dict: the figures of ``scan.nested.parquet`` (``nested_rows``,
    ...) and ``renames``, ``{temp file: final}``, for the table step's ``Finalize``."""

    def __init__(self, final: str, temp_dir: str):
        super().__init__()
        self.final = final
        self.temp_dir = temp_dir

    def expand(self, shards):
        union = beam.pvalue.AsSingleton(shards | "Schema" >> NestedUnion())
        converted = shards | "ConvertShards" >> beam.Map(convert_shard, union, self.temp_dir)
        return (shards.pipeline
                | "Once" >> beam.Create([None])
                | "WriteFile" >> beam.Map(write_file, beam.pvalue.AsList(converted), union,
                                          self.final, self.temp_dir))
