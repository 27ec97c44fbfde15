"""The CSV table and the JSON lines written in parallel: the path order cut into parts,
each merged and laid out by its own worker, then the parts joined into one file.

1. ``PlanParts``: one step ranks every row by ``DicomPath`` (reading only that column of
   each shard) and cuts the order into parts (``path_ranges.py``), each a slice of every
   shard: about ``TARGET_PARTS`` parts, of ``MIN_PART_ROWS`` to ``MAX_PART_ROWS`` rows.
2. ``WritePart``, in parallel after a reshuffle: ``tables.merge_shards`` over the part's
   slices writes its CSV (the header in part 0 only) and JSON lines under names of this
   attempt in the run's temp dir, and counts the report's figures of its rows
   (``TableStats`` as data, with hashes every worker agrees on).
3. ``PlanJoin``: the parts' figures added up, and where each part goes in one file per
   format. On a local disk that file is the first part's, grown to the whole size, and
   ``PlacePart``, in parallel after a reshuffle, copies each other part to its offset
   (``atomic_files.place``: the kernel copies); on a bucket one ``PlacePart`` streams
   the parts into a new object of this attempt (``atomic_files.concatenate``).
   ``tables.finalize_step`` renames the files into place with the other tables.

A row's CSV record and JSON line depend only on the row and the table's columns, so the
joined file is byte for byte the one a single merge writes, whatever the number of
parts. Retries: every attempt writes files of its own names (a repeated placement
copies the same bytes to the same place, a repeated join grows the first part to the
same size) and deletes none; the run's cleanup deletes
the temp dir. The bytes cross the disk once more than in a single merge (the parts,
then the file), in exchange for no worker laying out or copying the whole table.
"""

from __future__ import annotations

import math
import uuid
from operator import itemgetter
from typing import NamedTuple

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from transforms.common.atomic_files import concatenate, is_local, place, reserve
from transforms.output.path_ranges import cut_ranges
from transforms.output.table_stats import TableStats
from transforms.output.tables import TABLE_STATS, TableFiles, merge_shards

TARGET_PARTS = 64
MIN_PART_ROWS = 32768  # a part opens a slice of every shard and reads whole row groups
MAX_PART_ROWS = 65536


def part_rows(total: int) -> int:
    """Rows per part for a table of ``total`` rows."""
    return min(MAX_PART_ROWS, max(MIN_PART_ROWS, math.ceil(total / TARGET_PARTS)))


class TextPart(NamedTuple):
    """One part: its number and its ``shard_merge.ShardSlice``s, in shard order."""

    number: int
    slices: tuple


def plan_parts(_, shards) -> list[TextPart]:
    from transforms.inputs import storage

    storage.prepare_filesystems()
    return [TextPart(number, tuple(slices))
            for number, slices in enumerate(cut_ranges(shards, part_rows))]


def write_part(part: TextPart, columns, files: TableFiles, temp_dir: str,
               formula_guard: bool, with_stats: bool) -> dict:
    """Write one part's CSV and/or JSON lines (``files`` says which); its figures."""
    from transforms.inputs import storage

    storage.prepare_filesystems()
    attempt = uuid.uuid4().hex
    name = f"part-{attempt}-{part.number:05d}"
    temp = TableFiles(
        FileSystems.join(temp_dir, f"{name}.csv") if files.csv else None, None,
        files.naming, FileSystems.join(temp_dir, f"{name}.jsonl") if files.jsonl else None)
    stats = TableStats(stable_hashes=True) if with_stats else None
    figures = merge_shards(part.slices, columns, temp, temp_dir=temp_dir, attempt=attempt,
                           formula_guard=formula_guard, stats=stats, header=part.number == 0)
    written = {kind: (path, _size(path)) for kind, path in (("csv", temp.csv),
                                                            ("jsonl", temp.jsonl)) if path}
    return {"number": part.number, "files": written, "figures": figures,
            "stats": None if stats is None else stats.as_data()}


def _size(path: str) -> int:
    return FileSystems.match([path])[0].metadata_list[0].size_in_bytes


class Placement(NamedTuple):
    """Copy ``sources`` (one local part, or every part of a bucket's file), in order, to
    ``target`` from ``offset`` on."""

    sources: tuple
    target: str
    offset: int


def plan_join(written: list, files: TableFiles, temp_dir: str) -> dict:
    """The placements that join the parts into one file per format (on a local disk the
    first part's, grown to its full size here), and the whole table's figures with
    their ``renames``."""
    from transforms.inputs import storage

    storage.prepare_filesystems()
    # One per number: a part written twice (a repeated bundle) is the same bytes.
    parts = sorted({part["number"]: part for part in written}.values(),
                   key=lambda part: part["number"])
    if not parts or [part["number"] for part in parts] != list(range(len(parts))):
        raise RuntimeError(f"table parts missing: got {[p['number'] for p in parts]}")
    attempt = uuid.uuid4().hex
    renames, placements = {}, []
    for kind, final in (("csv", files.csv), ("jsonl", files.jsonl)):
        if not final:
            continue
        pieces = [part["files"][kind] for part in parts]
        if len(pieces) == 1:  # one part is the file
            joined = pieces[0][0]
        elif not is_local(temp_dir):
            joined = FileSystems.join(temp_dir, f"table-{attempt}.{kind}")
            placements.append(Placement(tuple(path for path, _ in pieces), joined, 0))
        else:
            # The first part's file is the joined one, grown to the whole size: its
            # bytes are in place already (the same size again if this step is repeated).
            joined, offset = pieces[0]
            for path, size in pieces[1:]:
                placements.append(Placement((path,), joined, offset))
                offset += size
            reserve(joined, offset)
        renames[joined] = final
    figures: dict = {"renames": renames}
    for part in parts:
        for key, value in part["figures"].items():
            figures[key] = figures.get(key, 0) + value
    if parts[0]["stats"] is not None:
        stats = TableStats.from_data(parts[0]["stats"])
        for part in parts[1:]:
            stats.merge(TableStats.from_data(part["stats"]))
        stats.source = files.csv or files.parquet
        figures[TABLE_STATS] = stats.as_dict()
    return {"figures": figures, "placements": placements}


def place_part(placement: Placement) -> int:
    """Copy one placement's bytes; returns them."""
    from transforms.inputs import storage

    storage.prepare_filesystems()
    if len(placement.sources) == 1 and is_local(placement.target):
        return place(placement.sources[0], placement.target, placement.offset)
    return concatenate(list(placement.sources), placement.target)


def joined_figures(plan: dict, placed: list) -> dict:
    """The table's figures, once every placement is copied."""
    if len(placed) != len(plan["placements"]):
        raise RuntimeError(f"{len(placed)} of {len(plan['placements'])} table parts placed")
    return plan["figures"]


class WriteTextParts(beam.PTransform):
    """Row shards -> one dict of figures (``rows``, ``json_rows``, ``renames``, and the
    report's ``TABLE_STATS`` with ``with_stats``) once the joined files are written."""

    def __init__(self, files: TableFiles, temp_dir: str, columns,
                 formula_guard: bool = False, with_stats: bool = True):
        super().__init__()
        self.files = files
        self.temp_dir = temp_dir
        self.columns = columns  # the table's columns: a singleton PCollection
        self.formula_guard = formula_guard
        self.with_stats = with_stats

    def expand(self, shards):
        plan = (
            shards.pipeline
            | "Once" >> beam.Create([None])
            | "PlanParts" >> beam.FlatMap(plan_parts, beam.pvalue.AsList(shards))
            | "Spread" >> beam.Reshuffle()
            | "WritePart" >> beam.Map(write_part, beam.pvalue.AsSingleton(self.columns),
                                      self.files, self.temp_dir, self.formula_guard,
                                      self.with_stats)
            | "AllParts" >> beam.combiners.ToList()
            | "PlanJoin" >> beam.Map(plan_join, self.files, self.temp_dir)
        )
        placed = (plan
                  | "Placements" >> beam.FlatMap(itemgetter("placements"))
                  | "SpreadPlacements" >> beam.Reshuffle()
                  | "PlacePart" >> beam.Map(place_part))
        return plan | "Joined" >> beam.Map(joined_figures, beam.pvalue.AsList(placed))
