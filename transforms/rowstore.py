"""Row store: spilled row shards that record which files they hold, kept between runs.

A spilled shard (``rows-<id>.pickle``, the format of ``transforms.spill``) gets a
sidecar ``rows-<id>.pickle.manifest`` listing, in the shard's row order, each row's
``(path, size, mtime, VRs)``: the file as it was *matched* (its metadata is taken before
it is read, so a file changed while being read looks changed next time) and the VR of
each of the row's values, so columns can be recomputed exactly from any subset of rows.

The sidecar is written under a temporary name and renamed into place after the shard
is closed, so a sidecar's existence means its shard is complete: that is what lets a
re-run pick up the shards of a killed run.
"""

from __future__ import annotations

import pickle
from sys import intern
import uuid
from typing import NamedTuple

from apache_beam.io.filesystems import FileSystems

from transforms.spill import SpillRows, _OpenShard

SIDECAR_SUFFIX = ".manifest"
STORE_VERSION = 1


class StoredRow(NamedTuple):
    """A ``Row`` plus the matched file's size and modification time."""

    path: str
    values: dict
    vrs: dict
    size: int
    mtime: float


def write_atomically(path: str, payload) -> None:
    """Pickle ``payload`` to ``path`` via a temporary name: readers see all or nothing."""
    partial = path + ".partial"
    with FileSystems.create(partial) as out:
        pickle.dump(payload, out, protocol=pickle.HIGHEST_PROTOCOL)
    FileSystems.rename([partial], [path])


def read_pickle(path: str):
    with FileSystems.open(path) as stream:
        return pickle.load(stream)


def sidecar_path(shard_path: str) -> str:
    return shard_path + SIDECAR_SUFFIX


def shard_of(sidecar: str) -> str:
    return sidecar[: -len(SIDECAR_SUFFIX)]


class StoredShard(_OpenShard):
    """A spill shard that also writes its sidecar when closed."""

    def __init__(self, path: str):
        super().__init__(path)
        self.files: list = []

    def add(self, row) -> None:
        # Interned column names are pickled once per chunk instead of once per row,
        # which makes the kept shards about half the size.
        values = {intern(name): text for name, text in row.values.items()}
        super().add(row._replace(values=values))
        vrs = row.vrs
        self.files.append((row.path, row.size, row.mtime, tuple(vrs[name] for name in row.values)))

    def close(self):
        shard = super().close()
        write_atomically(sidecar_path(self.path), {
            "kind": "rows",
            "version": STORE_VERSION,
            "rows": shard.rows,
            "columns": shard.columns,
            "files": self.files,
        })
        return shard


def new_shard_path(directory: str) -> str:
    return FileSystems.join(directory, f"rows-{uuid.uuid4().hex}.pickle")


class StoreRows(SpillRows):
    """``SpillRows`` into the run's state generation, each shard with its sidecar.

    Takes ``StoredRow`` (rows that carry their file's size and mtime)."""

    def process(self, row):
        if self.shard is None:
            self.shard = StoredShard(new_shard_path(self.temp_dir))
        yield from super().process(row)
