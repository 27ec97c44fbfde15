"""Spill: rows go to row shards as they are extracted; only ``ShardInfo`` flows on.

The column set is known only once every file has been read, so rows wait on disk, in
the shard format (``shard_format.py``), inside this run's state generation: the same
files are the table writers' input and the next run's row store. Each worker buffers at
most ``rows_per_shard`` rows, sorts them by path and writes one shard under a name no
other attempt uses (``rows-<uuid>.parquet``): a bundle that runs twice writes two
shards, and only the ``ShardInfo`` of the attempt the runner keeps reaches the tables.

Errors and non-DICOM skips, with the file's size and mtime, go to outcome parts
(``outcomes-<uuid>.parquet``, see ``state.py``) the same way.
"""

from __future__ import annotations

import uuid

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from transforms.common.batches import Buffered
from transforms.common.tags import (
    FILE_ROWS, MANIFEST, MEMBER_ROWS, OUTCOME_PARTS, REUSED_MANIFEST, REUSED_SHARDS, SHARDS,
    WEB_ROWS,
)
from transforms.output import shard_format
from transforms.output.state import write_outcomes

# Error/skip entries per outcome part: a killed run loses at most this many per worker.
ENTRIES_PER_PART = 2000


class BufferedFiles(Buffered):
    """A ``Buffered`` whose ``flush`` writes each full buffer as one new file of
    ``directory``, on any filesystem the run uses, under a name no other attempt uses
    (a retried bundle never overwrites one), and returns what to emit for it: row
    shards, outcome parts, re-spilled rows, stashed series rows."""

    def __init__(self, directory: str, size: int, budget: int = 0):
        super().__init__(size, budget)
        self.directory = directory

    def setup(self):
        from transforms.inputs import storage

        storage.prepare_filesystems()


def new_shard_path(directory: str) -> str:
    return FileSystems.join(directory, f"rows-{uuid.uuid4().hex}{shard_format.SUFFIX}")


class SpillRows(BufferedFiles):
    """StoredRow -> nothing per row; a ``ShardInfo`` each time a shard is written."""

    def __init__(self, directory: str, rows_per_shard: int = 5000):
        super().__init__(directory, rows_per_shard)

    def flush(self, rows: list):
        return shard_format.write_shard(new_shard_path(self.directory), rows)


class WriteOutcomes(BufferedFiles):
    """Error/skip entries -> ``outcomes-<uuid>.parquet`` parts; outputs each part's path."""

    def __init__(self, directory: str):
        super().__init__(directory, ENTRIES_PER_PART)

    def flush(self, entries: list) -> str:
        path = FileSystems.join(self.directory, f"outcomes-{uuid.uuid4().hex}.parquet")
        write_outcomes(path, entries)
        return path


class StoreRows(beam.PTransform):
    """{FILE_ROWS, MEMBER_ROWS, [WEB_ROWS], REUSED_SHARDS, MANIFEST, REUSED_MANIFEST} -> {SHARDS:
    ``ShardInfo`` of every row shard of this generation, OUTCOME_PARTS: the paths of its
    outcome parts}. Each row source is spilled by a step of its own, fused with the step
    that read it."""

    def __init__(self, generation: str, rows_per_shard: int):
        super().__init__()
        self.generation = generation
        self.rows_per_shard = rows_per_shard

    def expand(self, records):
        spilled = records[FILE_ROWS] | "Spill" >> beam.ParDo(
            SpillRows(self.generation, self.rows_per_shard))
        spilled_members = records[MEMBER_ROWS] | "SpillMembers" >> beam.ParDo(
            SpillRows(self.generation, self.rows_per_shard))
        # Rows of DICOMweb sources, when there are any (transforms/reading/dicomweb_rows.py).
        spilled_web = [records[WEB_ROWS] | "SpillWeb" >> beam.ParDo(
            SpillRows(self.generation, self.rows_per_shard))] if WEB_ROWS in records else []
        return {
            SHARDS: (spilled, spilled_members, *spilled_web, records[REUSED_SHARDS])
            | "AllShards" >> beam.Flatten(),
            OUTCOME_PARTS: (records[MANIFEST], records[REUSED_MANIFEST])
            | "AllOutcomes" >> beam.Flatten()
            | "WriteOutcomes" >> beam.ParDo(WriteOutcomes(self.generation)),
        }
