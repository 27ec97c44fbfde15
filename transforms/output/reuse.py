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

DICOMweb instances are not files: their outcomes are kept apart from the files' join and
reused series by series (``web_reuse.py``, with ``--incremental`` only); their kept rows
join the files' in the same re-spill, so a shard is read once.
"""

from __future__ import annotations

from typing import NamedTuple

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from transforms.common.tags import (
    ARCHIVE_ENTRY, ARCHIVE_UNITS, COUNTS, MANIFEST, MATCHED, REUSE_COUNTS, REUSE_ROWS,
    REUSED_ARCHIVE_UNITS, REUSED_MANIFEST, REUSED_SHARDS, TO_EXTRACT, WEB_ENTRIES,
    WEB_REUSED_UNITS, WEB_SERIES, WEB_TO_READ,
)
from transforms.inputs.archive_members import archive_of
from transforms.inputs.dicomweb import is_dicomweb_row
from transforms.output import shard_format
from transforms.output.spill import BufferedFiles, new_shard_path
from transforms.reading.file_outcomes import StoredRow
from transforms.output.state import RunState, read_outcomes
from transforms.output.web_reuse import PlanSeriesReuse, series_key



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
    """(rank, shard or outcome part) -> (path, Entry) for every file it lists;
    ``WEB_ENTRIES`` (series URL, Entry) for the previous output's DICOMweb outcomes."""

    def setup(self):
        from transforms.inputs import storage

        storage.prepare_filesystems()

    def process(self, rank_part):
        rank, part = rank_part
        if _is_shard(part):
            for row in shard_format.read_manifest(part):
                yield from _keyed(Entry(rank, row[1], row[2], "row", part, row[0]))
        else:
            for path, size, mtime, kind, record in read_outcomes(part):
                yield from _keyed(Entry(rank, size, mtime, kind, record, path))


def _keyed(entry: Entry):
    """A file's entry keyed by the matched file (archive members by their archive); a
    DICOMweb outcome's by its series, apart. Those of interrupted runs are never reused
    (``web_reuse.py``), nor are listing errors (which name no series)."""
    if not is_dicomweb_row(entry.path):
        yield archive_of(entry.path), entry
    elif entry.rank == 0 and series_key(entry.path):
        yield beam.pvalue.TaggedOutput(WEB_ENTRIES, (series_key(entry.path), entry))


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
        elif self.incremental and any(entry.rank == 0 for entry in entries):
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


class RespillRows(BufferedFiles):
    """(old shard, kept paths) -> ``ShardInfo`` of the kept rows, now stored in this
    run's generation. A shard kept whole and at least half full is copied; the kept rows
    of the others are packed into new shards."""

    def __init__(self, generation: str, rows_per_shard: int):
        super().__init__(generation, rows_per_shard)

    def process(self, shard_paths):
        old_shard, paths = shard_paths
        keep = set(paths)
        info = shard_format.read_info(old_shard)
        if len(keep) == info.rows and info.rows * 2 >= self.size:
            new = new_shard_path(self.directory)
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
        return shard_format.write_shard(new_shard_path(self.directory), rows)


class CountOutcomes(beam.CombineFn):
    """Count tags -> the summary's reuse figures."""

    def __init__(self, state: RunState, web: bool = False):
        self.state = state
        self.web = web  # DICOMweb sources: their series' figures too

    def create_accumulator(self):
        return {}

    def add_input(self, accumulator, tag):
        tag, count = tag if isinstance(tag, tuple) else (tag, 1)  # (name, count) or a name
        accumulator[tag] = accumulator.get(tag, 0) + count
        return accumulator

    def merge_accumulators(self, accumulators):
        merged = {}
        for accumulator in accumulators:
            for tag, count in accumulator.items():
                merged[tag] = merged.get(tag, 0) + count
        return merged

    def extract_output(self, accumulator):
        web = {name: accumulator.get(name, 0) for name in WEB_COUNTS} if self.web else {}
        return {
            "incremental": self.state.incremental,
            "files_extracted": accumulator.get("files_extracted", 0),
            "files_reused": accumulator.get("files_reused", 0),
            "files_resumed": accumulator.get("files_resumed", 0),
            "files_dropped": accumulator.get("files_dropped", 0),
            **web,
            "state": self.state.generation,
            "state_note": self.state.note,
        }


# The summary's DICOMweb reuse figures: series whose metadata this run requested, series
# kept from the previous output, and their instances (web_reuse.py).
WEB_COUNTS = ("dicomweb_series_read", "dicomweb_series_reused", "dicomweb_instances_reused")


class PlanReuse(beam.PTransform):
    """FileMetadata, or {MATCHED: FileMetadata, WEB_SERIES: listed ``SeriesRef``} ->
    {TO_EXTRACT: FileMetadata, REUSED_SHARDS: reused rows' ShardInfo, REUSED_MANIFEST:
    reused skip (and archive listing) entries, REUSED_ARCHIVE_UNITS: each reused archive's
    count of outcomes, REUSE_COUNTS: one dict of reuse figures}; with DICOMweb series
    also WEB_TO_READ: the series to read, WEB_REUSED_UNITS: each reused series'
    instance count (``web_reuse.py``, given ``web``: how to reach the servers)."""

    def __init__(self, state: RunState, rows_per_shard: int, progress=None, web=None):
        super().__init__()
        self.state = state
        self.rows_per_shard = rows_per_shard
        self.progress = progress
        self.web = web  # DicomWebSettings

    def expand(self, inputs):
        files, series = (inputs[MATCHED], inputs.get(WEB_SERIES)) \
            if isinstance(inputs, dict) else (inputs, None)
        pipeline = files.pipeline
        count = CountOutcomes(self.state, web=series is not None)
        if not self.state.reusing:
            tags = files | "AllExtracted" >> beam.Map(lambda _: "files_extracted")
            planned = {
                TO_EXTRACT: files,
                REUSED_SHARDS: pipeline | "NoShards" >> beam.Create([]),
                REUSED_MANIFEST: pipeline | "NoEntries" >> beam.Create([]),
                REUSED_ARCHIVE_UNITS: pipeline | "NoArchives" >> beam.Create([]),
            }
            if series is not None:  # every series is read
                tags = (tags, series | "AllRead" >> beam.Map(lambda _: "dicomweb_series_read")
                        ) | "AllTags" >> beam.Flatten()
                planned[WEB_TO_READ] = series
                planned[WEB_REUSED_UNITS] = pipeline | "NoSeries" >> beam.Create([])
            return {**planned, REUSE_COUNTS: tags | "Count" >> beam.CombineGlobally(count)}
        entries = (
            pipeline
            | "Parts" >> beam.Create(list(self.state.sources))
            | "Spread" >> beam.Reshuffle()
            | "ReadParts" >> beam.ParDo(ReadEntries()).with_outputs(WEB_ENTRIES, main="files")
        )
        keyed = files | "KeyByPath" >> beam.Map(lambda metadata: (metadata.path, metadata))
        split = (
            {"file": keyed, "old": entries.files}
            | "Join" >> beam.CoGroupByKey()
            | "Classify" >> beam.ParDo(Classify(self.state.incremental, self.progress))
            .with_outputs(REUSE_ROWS, MANIFEST, COUNTS, ARCHIVE_UNITS, main="extract")
        )
        kept, counts, web = [split[REUSE_ROWS]], [split[COUNTS]], {}
        if series is not None:
            checked = {"series": series, "old": entries[WEB_ENTRIES]} \
                | "PlanSeries" >> PlanSeriesReuse(self.web, self.progress)
            kept.append(checked[REUSE_ROWS])
            counts.append(checked[COUNTS])
            web = {WEB_TO_READ: checked.read, WEB_REUSED_UNITS: checked[WEB_REUSED_UNITS]}
        shards = (
            kept
            | "AllKept" >> beam.Flatten()
            | "ByShard" >> beam.GroupByKey()
            | "Respill" >> beam.ParDo(RespillRows(self.state.generation, self.rows_per_shard))
        )
        return {
            TO_EXTRACT: split.extract,
            REUSED_SHARDS: shards,
            REUSED_MANIFEST: split[MANIFEST],
            REUSED_ARCHIVE_UNITS: split[ARCHIVE_UNITS],
            REUSE_COUNTS: counts | "AllCounts" >> beam.Flatten()
            | "Count" >> beam.CombineGlobally(count),
            **web,
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
