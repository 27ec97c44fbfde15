"""Reuse: split the matched files into those whose earlier outcome still holds and those
to extract, and carry the kept rows into this run's generation.

A file's earlier outcome holds when an earlier manifest entry has the same path, size and
modification time (from ``FileMetadata``; on buckets the object's update time, which
changes with every new generation of the object). Rows and non-DICOM skips are reused;
errors are always retried (they may have been transient: permissions, network). An
archive is one unit: its members' entries are keyed by the archive, and are all kept or
all re-extracted (``reusable_outcomes``).

The join is a ``CoGroupByKey`` by path of the matched files with the manifest entries,
read in parallel from the manifest parts: like Discover's de-duplication it shuffles
only file metadata, so it holds at millions of files (a side-input dict of the previous
manifest would have to fit in every worker's memory). Row values never go through a
shuffle: reused rows are grouped as (shard, path) and each old shard is read once and
its kept rows re-spilled into the new generation; a shard whose rows are all kept and
that is at least half full is copied whole.
"""

from __future__ import annotations

from typing import NamedTuple

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from transforms.common.batches import Buffered
from transforms.common.tags import (
    ARCHIVE_ENTRY, ARCHIVE_UNITS, COUNTS, MANIFEST, REUSE_COUNTS, REUSE_ROWS, REUSED_ARCHIVE_UNITS,
    REUSED_MANIFEST, REUSED_SHARDS, TO_EXTRACT,
)
from transforms.inputs.archive_members import archive_of
from transforms.inputs.dicomweb import is_dicomweb_row
from transforms.output import shard_format
from transforms.output.spill import new_shard_path
from transforms.reading.file_outcomes import StoredRow
from transforms.output.state import RunState, read_outcomes



def archive_units(entry) -> int:
    """An archive listing's count of outcomes (stored as text in the outcome parts)."""
    return int(entry.payload[0])


class Entry(NamedTuple):
    rank: int  # 0 = the previous output, 1.. = interrupted runs, newest first
    size: int
    mtime: float
    kind: str  # "row", "skipped", "error" or "archive" (an archive's listing)
    payload: object  # row: shard path; skipped/error/archive: the record without its path
    path: str = ""  # the entry's DicomPath: an archive member's differs from its key


def _is_shard(path: str) -> bool:
    return FileSystems.split(path)[1].startswith("rows-")


def _first_shard_first(entries: list) -> list:
    # A retried bundle of an interrupted run may have written an outcome to two shards:
    # the first shard by name wins, so every runner picks the same.
    return sorted(entries, key=lambda entry: str(entry.payload))


def reusable_outcomes(key: str, entries: list, size: int, mtime: float):
    """The earlier outcomes that still hold for the matched file ``key``, or ``None``.

    A plain file: any one entry of the newest rank that has one (not an error) with the
    same size and mtime. An archive is one unit: every outcome of one rank, all with the
    archive's size and mtime, no error among them, and as many as its listing counted
    (an interrupted run may have stored only some of its members)."""
    by_rank: dict = {}
    for entry in entries:
        by_rank.setdefault(entry.rank, []).append(entry)
    for rank in sorted(by_rank):
        group = by_rank[rank]
        listings = [entry for entry in group if entry.kind == ARCHIVE_ENTRY]
        if not listings:
            if any(entry.path != key for entry in group):
                continue  # members without their archive's listing: a partial run
            usable = [entry for entry in group if entry.kind != "error"
                      and entry.size == size and entry.mtime == mtime]
            if usable:
                return _first_shard_first(usable)[:1]
            continue
        if any(entry.kind == "error" or entry.size != size or entry.mtime != mtime
               for entry in group):
            continue
        # A retried bundle may have stored an outcome twice: one per member and record.
        outcomes: dict = {}
        for entry in _first_shard_first(group):
            if entry.kind != ARCHIVE_ENTRY:
                outcomes.setdefault(
                    (entry.path, entry.kind, None if entry.kind == "row" else entry.payload), entry
                )
        if len(outcomes) == archive_units(listings[0]):
            return [listings[0], *outcomes.values()]
    return None


class ReadEntries(beam.DoFn):
    """(rank, shard or outcome part) -> (path, Entry) for every file it lists."""

    def setup(self):
        from transforms.inputs import storage

        storage.prepare_filesystems()

    def process(self, rank_part):
        rank, part = rank_part
        # Keyed by the matched file: archive members by their archive.
        if _is_shard(part):
            for row in shard_format.read_manifest(part):
                yield archive_of(row[0]), Entry(rank, row[1], row[2], "row", part, row[0])
        else:
            for path, size, mtime, kind, record in read_outcomes(part):
                yield archive_of(path), Entry(rank, size, mtime, kind, record, path)


class Classify(beam.DoFn):
    """(path, {file, old}) -> FileMetadata to extract, or the reused outcome."""

    def __init__(self, incremental: bool, progress=None):
        self.incremental = incremental
        self.progress = progress

    def setup(self):
        if self.progress is not None:
            self.progress.connect()

    def process(self, joined):
        path, groups = joined
        files, entries = list(groups["file"]), list(groups["old"])
        if files:
            yield from self._extract_or_reuse(path, files[0], entries)
        elif self.incremental and not is_dicomweb_row(path) and any(
                entry.rank == 0 for entry in entries):
            # DICOMweb rows are never reused (their series are read again): not dropped.
            yield beam.pvalue.TaggedOutput(COUNTS, "files_dropped")

    def _extract_or_reuse(self, path, file_metadata, entries):
        size, mtime = file_metadata.size_in_bytes, file_metadata.last_updated_in_seconds
        kept = reusable_outcomes(path, entries, size, mtime)
        if kept is None:
            yield beam.pvalue.TaggedOutput(COUNTS, "files_extracted")
            yield file_metadata
        else:
            yield from self._reused(kept, size, mtime)

    def _reused(self, kept, size, mtime):
        yield beam.pvalue.TaggedOutput(
            COUNTS, "files_reused" if kept[0].rank == 0 else "files_resumed"
        )
        if self.progress is not None:
            self.progress.done(1)
        for entry in kept:
            if entry.kind == "row":
                yield beam.pvalue.TaggedOutput(REUSE_ROWS, (entry.payload, entry.path))
            else:
                yield beam.pvalue.TaggedOutput(
                    MANIFEST, (entry.path, size, mtime, entry.kind, entry.payload)
                )
            if entry.kind == ARCHIVE_ENTRY:
                yield beam.pvalue.TaggedOutput(ARCHIVE_UNITS, archive_units(entry))

    def finish_bundle(self):
        if self.progress is not None:
            self.progress.flush()


class RespillRows(Buffered):
    """(old shard, kept paths) -> ``ShardInfo`` of the kept rows, now stored in this
    run's generation. A shard kept whole and at least half full is copied; the kept rows
    of the others are packed into new shards."""

    def __init__(self, generation: str, rows_per_shard: int):
        super().__init__(rows_per_shard)
        self.generation = generation

    def setup(self):
        from transforms.inputs import storage

        storage.prepare_filesystems()

    def process(self, shard_paths):
        old_shard, paths = shard_paths
        keep = set(paths)
        info = shard_format.read_info(old_shard)
        if len(keep) == info.rows and info.rows * 2 >= self.size:
            new = new_shard_path(self.generation)
            FileSystems.copy([old_shard], [new])
            yield info._replace(path=new)
        else:
            yield from self._repacked(old_shard, keep)

    def _repacked(self, old_shard, keep):
        found = 0
        for row in shard_format.read_rows(old_shard):
            if row.path in keep:
                found += 1
                yield from self.add(StoredRow(*row))
        if found != len(keep):
            raise RuntimeError(f"{old_shard} holds {found} of the {len(keep)} rows to reuse")

    def flush(self, rows: list):
        return shard_format.write_shard(new_shard_path(self.generation), rows)


class CountOutcomes(beam.CombineFn):
    """Count tags -> the summary's reuse figures."""

    def __init__(self, state: RunState):
        self.state = state

    def create_accumulator(self):
        return {}

    def add_input(self, accumulator, tag):
        accumulator[tag] = accumulator.get(tag, 0) + 1
        return accumulator

    def merge_accumulators(self, accumulators):
        merged = {}
        for accumulator in accumulators:
            for tag, count in accumulator.items():
                merged[tag] = merged.get(tag, 0) + count
        return merged

    def extract_output(self, accumulator):
        return {
            "incremental": self.state.incremental,
            "files_extracted": accumulator.get("files_extracted", 0),
            "files_reused": accumulator.get("files_reused", 0),
            "files_resumed": accumulator.get("files_resumed", 0),
            "files_dropped": accumulator.get("files_dropped", 0),
            "state": self.state.generation,
            "state_note": self.state.note,
        }


class PlanReuse(beam.PTransform):
    """FileMetadata -> {TO_EXTRACT: FileMetadata, REUSED_SHARDS: reused rows' ShardInfo,
    REUSED_MANIFEST: reused skip (and archive listing) entries, REUSED_ARCHIVE_UNITS: each
    reused archive's count of outcomes, REUSE_COUNTS: one dict of reuse figures}."""

    def __init__(self, state: RunState, rows_per_shard: int, progress=None):
        super().__init__()
        self.state = state
        self.rows_per_shard = rows_per_shard
        self.progress = progress

    def expand(self, files):
        pipeline = files.pipeline
        if not self.state.reusing:
            tags = files | "AllExtracted" >> beam.Map(lambda _: "files_extracted")
            return {
                TO_EXTRACT: files,
                REUSED_SHARDS: pipeline | "NoShards" >> beam.Create([]),
                REUSED_MANIFEST: pipeline | "NoEntries" >> beam.Create([]),
                REUSED_ARCHIVE_UNITS: pipeline | "NoArchives" >> beam.Create([]),
                REUSE_COUNTS: tags | "Count" >> beam.CombineGlobally(CountOutcomes(self.state)),
            }
        entries = (
            pipeline
            | "Parts" >> beam.Create(list(self.state.sources))
            | "Spread" >> beam.Reshuffle()
            | "ReadParts" >> beam.ParDo(ReadEntries())
        )
        keyed = files | "KeyByPath" >> beam.Map(lambda metadata: (metadata.path, metadata))
        split = (
            {"file": keyed, "old": entries}
            | "Join" >> beam.CoGroupByKey()
            | "Classify" >> beam.ParDo(Classify(self.state.incremental, self.progress))
            .with_outputs(REUSE_ROWS, MANIFEST, COUNTS, ARCHIVE_UNITS, main="extract")
        )
        shards = (
            split[REUSE_ROWS]
            | "ByShard" >> beam.GroupByKey()
            | "Respill" >> beam.ParDo(RespillRows(self.state.generation, self.rows_per_shard))
        )
        return {
            TO_EXTRACT: split.extract,
            REUSED_SHARDS: shards,
            REUSED_MANIFEST: split[MANIFEST],
            REUSED_ARCHIVE_UNITS: split[ARCHIVE_UNITS],
            REUSE_COUNTS: split[COUNTS]
            | "Count" >> beam.CombineGlobally(CountOutcomes(self.state)),
        }


def skip_record(entry) -> tuple:
    """A manifest entry ``(path, size, mtime, kind, details)`` of a reused non-DICOM skip,
    as the ``(path, reason)`` record the extraction's ``SKIPPED`` output gives."""
    path, _size, _mtime, _kind, details = entry
    return (path,) + tuple(details)


def skip_records(entry):
    """``skip_record`` of the reused entries that are skips (not archive listings)."""
    if entry[3] == "skipped":
        yield skip_record(entry)
