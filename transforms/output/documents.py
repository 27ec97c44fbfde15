"""The outputs made from each row's DICOM JSON (``transforms/reading/dicom_json.py``):
``scan.jsonl`` (``--format json``) here, and the reading of that JSON out of the row
shards, and the nested schema's union, for ``scan.nested.parquet`` (``nested_file.py``)
and the nested dataset's parts (``nested_parts.py``).

Each row carries its JSON as the cell ``JSON_COLUMN``, which the table merge numbers one
past the table's last column. ``split_json`` takes those cells out of a chunk before the
CSV and Parquet are cut from it, and ``JsonLines`` writes them as the merge hands rows
over: in ``DicomPath`` order whatever the runner, so the file is byte-identical across
runs. The nested schema is the union over every row: ``shard_schema`` reads the JSON
cells of one shard, in parallel over the shards, and ``UnionSchemas`` combines their
unions (as data) into the one schema of every nested output.
"""

from __future__ import annotations

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from transforms.common.rows import JSON_COLUMN, PATH_COLUMN
from transforms.output import shard_format
from transforms.output.nested import NestedSchema
from transforms.output.shard_format import CellRows
from transforms.output.shard_merge import open_shard_file
from transforms.output.table_chunks import NOTHING, text_bytes

_NEWLINE = pa.scalar("\n", pa.large_string())


def split_json(chunk: CellRows, key: int, texts_wanted: bool = True
               ) -> tuple[CellRows, pa.Array | None]:
    """``chunk`` without its cells numbered ``key``, and per row the text of that cell
    (an Arrow text array, null where a row has none); None instead of the array when no
    row has one, or when not ``texts_wanted``."""
    is_json = chunk.keys == key
    if not is_json.any():
        return chunk, None
    rows = len(chunk.paths)
    row_of_cell = np.repeat(np.arange(rows), np.diff(chunk.offsets))
    texts = chunk.values.filter(pa.array(is_json)) if texts_wanted else None
    json_rows = row_of_cell[is_json]
    if texts is not None and len(json_rows) != rows:  # a row without its JSON
        slots = np.full(rows, len(texts))
        slots[json_rows] = np.arange(len(texts))
        texts = pa.concat_arrays([texts, pa.nulls(1, texts.type)]).take(pa.array(slots))
    keep = ~is_json
    offsets = np.zeros(rows + 1, np.int64)
    np.cumsum(np.bincount(row_of_cell[keep], minlength=rows), out=offsets[1:])
    return chunk._replace(offsets=offsets, keys=chunk.keys[keep],
                          values=chunk.values.filter(pa.array(keep))), texts


def _lines(texts: pa.Array) -> bytes:
    """The texts' UTF-8 bytes, each followed by a newline."""
    return text_bytes(pc.binary_join_element_wise(texts.cast(pa.large_string()), NOTHING,
                                                  _NEWLINE))


class JsonLines:
    """``scan.jsonl``: one JSON line per row, written to ``stream`` (a Beam filesystem's
    writable file) as the merge hands rows over."""

    def __init__(self, stream):
        self.stream = stream
        self.written = 0

    def write(self, paths: list, texts: pa.Array | None) -> None:
        """``texts``: each row's JSON line, as ``split_json`` gives them."""
        if texts is None or texts.null_count:
            missing = [path for path, valid in zip(
                paths, [False] * len(paths) if texts is None else texts.is_valid().to_pylist())
                if not valid]
            # Every row of a json run has its JSON: never drop a file.
            raise RuntimeError(f"{len(missing)} rows have no DICOM JSON, e.g. {missing[0]}")
        if len(texts):
            self.stream.write(_lines(texts))
        self.written += len(paths)

    def close(self) -> None:
        self.stream.close()

    def figures(self) -> dict:
        return {"json_rows": self.written}


def _json_texts(batch: pa.RecordBatch, json_keys: list, path: str) -> list:
    """The JSON text of each row of ``batch``; every row of a nested run has one."""
    cells = shard_format.batch_cell_rows(batch, files=False)
    rows = len(cells.paths)
    row_of_cell = np.repeat(np.arange(rows), np.diff(cells.offsets))
    is_json = np.isin(cells.keys, json_keys)
    if np.bincount(row_of_cell[is_json], minlength=rows).tolist() != [1] * rows:
        raise RuntimeError(f"{path}: a row has no DICOM JSON (or two)")
    return cells.values.filter(pa.array(is_json)).to_pylist()


def _json_keys(parquet: pq.ParquetFile, path: str) -> list:
    _, keys = shard_format.check_keys(parquet.metadata.metadata, path)
    return [number for number, (column, _) in enumerate(keys) if column == JSON_COLUMN]


_JSON_READ = [PATH_COLUMN, shard_format.CELLS_COLUMN, shard_format.VALUES_COLUMN]


def shard_json(path: str, size, start: int = 0, stop: int | None = None):
    """``(paths, JSON texts)`` of rows ``start:stop`` of a shard (all by default), row
    group by row group, in the shard's order (by path); reads only the row groups that
    hold them. Every row has its JSON."""
    stream, parquet = open_shard_file(path, size)
    try:
        keys = _json_keys(parquet, path)
        first = 0
        meta = parquet.metadata
        for group in range(meta.num_row_groups):
            rows = meta.row_group(group).num_rows
            low = max(start, first)
            high = first + rows if stop is None else min(stop, first + rows)
            if low < high:
                table = parquet.read_row_group(group, columns=_JSON_READ)
                for batch in table.slice(low - first, high - low).combine_chunks().to_batches():
                    yield batch.column(PATH_COLUMN).to_pylist(), _json_texts(batch, keys, path)
            first += rows
    finally:
        stream.close()


def read_slice(path: str, size, start: int, stop: int) -> list[tuple[str, str]]:
    """``(DicomPath, JSON text)`` of rows ``start:stop`` of a shard."""
    return [pair for paths, texts in shard_json(path, size, start, stop)
            for pair in zip(paths, texts)]


class NestedUnion(beam.PTransform):
    """Row shards -> one element: the nested schema's union (data), shard by shard in
    parallel."""

    def expand(self, shards):
        return (shards
                | "ShardSchemas" >> beam.Map(shard_schema)
                | "UnionSchema" >> beam.CombineGlobally(UnionSchemas()))


def shard_schema(shard) -> dict:
    """The union of one shard's rows' JSON, as data (``NestedSchema.as_data``)."""
    from transforms.inputs import storage

    storage.prepare_filesystems()
    union = NestedSchema()
    for _, texts in shard_json(shard.path, shard.size):
        union.add_texts(texts)
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
