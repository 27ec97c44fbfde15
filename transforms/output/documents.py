"""The outputs made from each row's DICOM JSON (``transforms/reading/dicom_json.py``):
``scan.jsonl`` (``--format json``) and ``scan.nested.parquet`` (``--format nested``,
``nested.py``), in the table's order.

Each row carries its JSON as the cell ``JSON_COLUMN``, which the table merge numbers one
past the table's last column. ``split_json`` takes those cells out of a chunk before the
CSV and Parquet are cut from it, and ``DocumentWriters`` writes them as the merge hands
rows over: in ``DicomPath`` order whatever the runner, so the files are byte-identical
across runs. The nested schema is the union over every row: ``shard_schema`` reads the
JSON cells of one shard, in parallel over the shards, and ``UnionSchemas`` combines their
unions (as data) into the one schema the merge writes with.
"""

from __future__ import annotations

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from transforms.common.rows import JSON_COLUMN
from transforms.output import shard_format
from transforms.output.nested import NestedSchema
from transforms.output.nested_rows import NestedRows
from transforms.output.shard_format import CellRows

NESTED_COMPRESSION = "zstd"


def split_json(chunk: CellRows, key: int) -> tuple[CellRows, list | None]:
    """``chunk`` without its cells numbered ``key``, and per row the text of that cell
    (None where a row has none); None instead of the list when no row has one."""
    is_json = chunk.keys == key
    if not is_json.any():
        return chunk, None
    rows = len(chunk.paths)
    row_of_cell = np.repeat(np.arange(rows), np.diff(chunk.offsets))
    texts = [None] * rows
    for row, text in zip(row_of_cell[is_json].tolist(),
                         chunk.values.filter(pa.array(is_json)).to_pylist()):
        texts[row] = text
    keep = ~is_json
    offsets = np.zeros(rows + 1, np.int64)
    np.cumsum(np.bincount(row_of_cell[keep], minlength=rows), out=offsets[1:])
    return chunk._replace(offsets=offsets, keys=chunk.keys[keep],
                          values=chunk.values.filter(pa.array(keep))), texts


class JsonLines:
    """Writes one JSON line per row to ``stream`` (a Beam filesystem's writable file)."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, texts: list) -> None:
        if texts:  # one join, "" last for the last newline: no copy of each line first
            self.stream.write("\n".join([*texts, ""]).encode("utf-8", "backslashreplace"))

    def close(self) -> None:
        self.stream.close()


def nested_schema(shards, union_data: dict | None = None) -> NestedSchema:
    """The union schema of every row's JSON in ``shards`` (``ShardInfo``): from
    ``union_data`` (``NestedUnion``'s, made in parallel) or, without it, read here."""
    if union_data is not None:
        return NestedSchema.from_data(union_data)
    union = NestedSchema()
    for shard in shards:
        union.merge(NestedSchema.from_data(shard_schema(shard)))
    return union


class NestedUnion(beam.PTransform):
    """Row shards -> one element: the nested schema's union (data), shard by shard in
    parallel, so that the merge on its one worker parses each row's JSON once (to write
    it), not twice."""

    def expand(self, shards):
        return (shards
                | "ShardSchemas" >> beam.Map(shard_schema)
                | "UnionSchema" >> beam.CombineGlobally(UnionSchemas()))


def shard_schema(shard) -> dict:
    """The union of one shard's rows' JSON, as data (``NestedSchema.as_data``)."""
    from transforms.inputs import storage
    from transforms.inputs.ranged import open_ranged

    storage.prepare_filesystems()
    union = NestedSchema()
    stream = open_ranged(shard.path, size=shard.size)
    try:
        parquet = shard_format.open_shard(stream, shard.path, pre_buffer=False)
        _, keys = shard_format.check_keys(parquet.metadata.metadata, shard.path)
        wanted = [number for number, (column, _) in enumerate(keys) if column == JSON_COLUMN]
        if wanted:
            for batch in parquet.iter_batches(columns=None, use_threads=False):
                cells = shard_format.batch_cell_rows(batch)
                union.add_texts(
                    cells.values.filter(pa.array(np.isin(cells.keys, wanted))).to_pylist())
    finally:
        stream.close()
    return union.as_data()


class UnionSchemas(beam.CombineFn):
    """Shard schemas (data) -> the union of all (data); any order, any split."""

    def create_accumulator(self):
        return NestedSchema().as_data()

    def add_input(self, accumulator, data):
        union = NestedSchema.from_data(accumulator)
        union.merge(NestedSchema.from_data(data))
        return union.as_data()

    def merge_accumulators(self, accumulators):
        union = NestedSchema()
        for data in accumulators:
            union.merge(NestedSchema.from_data(data))
        return union.as_data()

    def extract_output(self, accumulator):
        return accumulator


class DocumentWriters:
    """``scan.jsonl`` and/or ``scan.nested.parquet`` from the rows' JSON texts; ``open``
    makes a writable stream of a path (``common.atomic_files.open_write``)."""

    def __init__(self, jsonl: str | None, nested: str | None, union: NestedSchema | None, open):
        self.jsonl = JsonLines(open(jsonl)) if jsonl else None
        self.nested = self.nested_out = None
        if nested:
            self.schema = union.arrow_schema()
            self.rows = NestedRows(self.schema, union)
            self.json_columns = union.json_columns()
            self.nested_out = open(nested)
            self.nested = pq.ParquetWriter(self.nested_out, self.schema,
                                           compression=NESTED_COMPRESSION)
        self.written = 0

    def write(self, paths: list, texts: list | None) -> None:
        if self.jsonl is None and self.nested is None:
            return
        if texts is None or any(text is None for text in texts):
            missing = [path for path, text in zip(paths, texts or [None] * len(paths))
                       if text is None]
            # Every row of a json or nested run has its JSON: never drop a file.
            raise RuntimeError(f"{len(missing)} rows have no DICOM JSON, e.g. {missing[0]}")
        if self.jsonl is not None:
            self.jsonl.write(texts)
        if self.nested is not None:
            self.nested.write_batch(self.rows.batch(paths, texts))
        self.written += len(paths)

    def close(self) -> None:
        if self.jsonl is not None:
            self.jsonl.close()
        if self.nested is not None:
            self.nested.close()
            self.nested_out.close()

    def figures(self) -> dict:
        figures = {}
        if self.jsonl is not None:
            figures["json_rows"] = self.written
        if self.nested is not None:
            figures.update({
                "nested_rows": self.written,
                "nested_columns": len(self.schema),
                "nested_json_columns": self.json_columns,
                "nested_unparseable_values": sum(self.rows.unparseable.values()),
                "nested_unparseable_by_column": dict(sorted(self.rows.unparseable.items())),
            })
        return figures
