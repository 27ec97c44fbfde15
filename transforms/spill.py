"""Spill: write rows to temporary shard files as they are extracted.

The column set is only known once every file has been read, so rows must wait
somewhere before they can be formatted. Keeping them in a PCollection would hold the
whole table in the local runner's memory; instead each worker streams its rows into
shard files of at most ``rows_per_shard`` rows, and only a small ``Shard`` record (its
path, row count and columns with their VRs) flows on.
"""

from __future__ import annotations

import pickle
import uuid
from typing import Iterator, NamedTuple

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.windowed_value import WindowedValue

from transforms.flatten import PATH_COLUMN

# Rows pickled together: large enough to amortise pickling, small enough to stay cheap.
CHUNK_ROWS = 256


class Shard(NamedTuple):
    path: str
    rows: int
    columns: dict  # column name -> frozenset of VRs seen


class _OpenShard:
    def __init__(self, path: str):
        self.path = path
        self.file = FileSystems.create(path)
        self.rows = 0
        self.columns: dict = {}
        self.chunk: list = []

    def add(self, row) -> None:
        self.chunk.append(row.values)
        self.rows += 1
        columns = self.columns
        for name, vr in row.vrs.items():
            seen = columns.get(name)
            if seen is None:
                columns[name] = {vr}
            elif vr not in seen:
                seen.add(vr)
        if len(self.chunk) >= CHUNK_ROWS:
            self._write_chunk()

    def _write_chunk(self) -> None:
        pickle.dump(self.chunk, self.file, protocol=pickle.HIGHEST_PROTOCOL)
        self.chunk = []

    def close(self) -> Shard:
        if self.chunk:
            self._write_chunk()
        self.file.close()
        columns = {name: frozenset(vrs) for name, vrs in self.columns.items()}
        return Shard(self.path, self.rows, columns)


def read_shard(path: str) -> Iterator[dict]:
    """The rows (column -> text dicts) of one spilled shard, in the order written."""
    with FileSystems.open(path) as stream:
        while True:
            try:
                chunk = pickle.load(stream)
            except EOFError:
                return
            yield from chunk


def read_shard_by_path(path: str) -> list[dict]:
    """A shard's rows sorted by ``DicomPath``, the order every table writer emits."""
    return sorted(read_shard(path), key=lambda values: values[PATH_COLUMN])


class SpillRows(beam.DoFn):
    """Row -> nothing per row; a ``Shard`` each time a shard file is completed."""

    def __init__(self, temp_dir: str, rows_per_shard: int = 5000):
        self.temp_dir = temp_dir
        self.rows_per_shard = rows_per_shard
        self.shard = None

    def start_bundle(self):
        self.shard = None

    def process(self, row):
        if self.shard is None:
            name = f"rows-{uuid.uuid4().hex}.pickle"
            self.shard = _OpenShard(FileSystems.join(self.temp_dir, name))
        self.shard.add(row)
        if self.shard.rows >= self.rows_per_shard:
            yield self.shard.close()
            self.shard = None

    def finish_bundle(self):
        if self.shard is not None:
            shard, self.shard = self.shard.close(), None
            yield WindowedValue(shard, GlobalWindow().max_timestamp(), [GlobalWindow()])
