"""``--format nested`` with an output folder (``-o scan/``, ``-o gs://b/scan/``): the
nested table as a Parquet dataset of parts, written by the workers in parallel.

The folder holds only the parts, ``part-00000-of-00012.parquet`` and so on, so
``scan/*.parquet`` is the table for DuckDB, pyarrow, Spark and BigQuery; every other
output goes beside the folder (``scan.summary.json``, ``scan.csv``, ...). Every part has
the same schema (``nested.py``); read in name order, the parts give the rows of the
single file ``scan.nested.parquet`` in the same order.

How a run writes them:

1. ``NestedUnion`` (``documents.py``): each row shard gives the union of its rows' JSON
   (``nested.NestedSchema`` as plain data); one combine makes the schema of every part.
2. ``PlanParts``: the path order cut into parts of ``--rows-per-part`` rows, each a
   slice of every shard (``path_ranges.py``). The same rows give the same parts
   whatever the runner, the workers or the sharding, so repeated and incremental runs
   write the same bytes.
3. ``WritePart``, in parallel after a reshuffle: reads its slices (the one or two row
   groups of each shard that hold them), sorts them by path and writes the part under a
   name unique to its attempt in the run's temp dir. Memory: one part's JSON texts.
4. ``FinalizeParts``: renames the parts into the folder ("already renamed" is done, as
   ``common.atomic_files.finalize_tables``), then deletes the parts an earlier run left
   with another count. The folder holds nothing else (checked before the run:
   :func:`foreign_files`), so nothing but old parts is ever deleted.
"""

from __future__ import annotations

import os
import re
import uuid
from operator import itemgetter
from typing import NamedTuple

import apache_beam as beam
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from transforms.common.atomic_files import finalize_tables, open_write
from transforms.common.tags import COLUMNS, TABLE_FIGURES
from transforms.output.columns import ComputeColumns
from transforms.output.documents import NestedUnion, read_slice
from transforms.output.nested import NestedSchema
from transforms.output.path_ranges import cut_ranges
from transforms.output.nested_rows import NestedRows, unparseable_figures
from transforms.output.shard_stats import CountTableFigures
from transforms.output.tables import TableFiles
from transforms.output.write_tables import WriteTables

PART_NAME = re.compile(r"part-(\d{5})-of-(\d{5})\.parquet")
WRITE_ROWS = 2048  # rows per write_batch, so per row group of a part
PART_COMPRESSION = "zstd"


def is_folder_output(output: str) -> bool:
    """``-o`` names a folder: it ends with a separator, or is a local folder already."""
    if output.endswith("/") or (os.sep != "/" and output.endswith(os.sep)):
        return True
    return "://" not in output and os.path.isdir(output)


def folder_stem(output: str) -> str:
    """``scan/`` -> ``scan``: the other outputs are named from it, beside the folder."""
    return output.rstrip("/" + os.sep) if "://" not in output else output.rstrip("/")


def part_name(number: int, parts: int) -> str:
    return f"part-{number:05d}-of-{parts:05d}.parquet"


def foreign_files(folder: str) -> list[str]:
    """What ``folder`` holds besides parts of a nested dataset: the run refuses to write
    into a folder that holds anything else (its stale parts are deleted)."""
    if "://" not in folder:
        if not os.path.isdir(folder):
            return []
        return sorted(os.path.join(folder, name) for name in os.listdir(folder)
                      if not PART_NAME.fullmatch(name))
    found = FileSystems.match([FileSystems.join(folder, "*")])[0].metadata_list
    return sorted(item.path for item in found
                  if not PART_NAME.fullmatch(item.path[len(folder):]))


class PartFiles(NamedTuple):
    """The dataset's folder and rows per part (``--rows-per-part``)."""

    folder: str
    rows_per_part: int


class PartPlan(NamedTuple):
    """One part: its number, the number of parts, and ``(shard path, shard size, start,
    stop)`` of each shard slice it holds."""

    number: int
    parts: int
    slices: tuple


def plan_parts(_, shards, rows_per_part: int) -> list[PartPlan]:
    """Cut the rows of ``shards``, in path order, into parts of ``rows_per_part`` rows
    (``path_ranges.cut_ranges``)."""
    from transforms.inputs import storage

    storage.prepare_filesystems()
    ranges = cut_ranges(shards, rows_per_part)
    return [PartPlan(number, len(ranges), tuple(
                (piece.path, piece.size, piece.start, piece.stop) for piece in slices))
            for number, slices in enumerate(ranges)]


def write_part(plan: PartPlan, schema_data: dict, folder: str, temp_dir: str) -> dict:
    """Write one part under a name of this attempt; return its figures and rename."""
    from transforms.inputs import storage

    storage.prepare_filesystems()
    rows = []
    for path, size, start, stop in plan.slices:
        rows.extend(read_slice(path, size, start, stop))
    rows.sort(key=itemgetter(0))
    union = NestedSchema.from_data(schema_data)
    schema = union.arrow_schema()
    converter = NestedRows(schema, union)
    temp = FileSystems.join(temp_dir, f"part-{uuid.uuid4().hex}-{plan.number:05d}.parquet")
    out = open_write(temp)
    writer = pq.ParquetWriter(out, schema, compression=PART_COMPRESSION)
    for start in range(0, len(rows), WRITE_ROWS):
        paths, texts = zip(*rows[start: start + WRITE_ROWS])
        writer.write_batch(converter.batch(list(paths), list(texts)))
    writer.close()
    out.close()
    return {"renames": {temp: FileSystems.join(folder, part_name(plan.number, plan.parts))},
            "rows": len(rows), "unparseable": dict(converter.unparseable),
            "columns": len(schema), "json_columns": union.json_columns()}


def finalize_parts(written: list, folder: str) -> dict:
    """Rename every part into ``folder``, delete older parts; return the figures."""
    from transforms.inputs import storage

    storage.prepare_filesystems()
    if "://" not in folder:
        os.makedirs(folder, exist_ok=True)
    renames = {}
    for figures in written:
        renames.update(figures["renames"])
    finalize_tables(renames)
    kept = set(renames.values())
    stale = [path for path in _parts_in(folder) if path not in kept]
    if stale:
        FileSystems.delete(stale)
    return {
        "nested_rows": sum(figures["rows"] for figures in written),
        "nested_parts": len(written),
        "nested_columns": written[0]["columns"],
        "nested_json_columns": written[0]["json_columns"],
        **unparseable_figures(figures["unparseable"] for figures in written),
    }


def _parts_in(folder: str) -> list[str]:
    if "://" not in folder:
        return [os.path.join(folder, name) for name in os.listdir(folder)
                if PART_NAME.fullmatch(name)]
    found = FileSystems.match([FileSystems.join(folder, "part-*")])[0].metadata_list
    return [item.path for item in found if PART_NAME.fullmatch(item.path[len(folder):])]


def with_parts(table_figures: dict, part_figures: dict) -> dict:
    return {**table_figures, **part_figures}


class WriteNestedParts(beam.PTransform):
    """Row shards -> one dict of the dataset's figures (``nested_rows``, ``nested_parts``,
    ...), emitted once every part is in place."""

    def __init__(self, files: PartFiles, temp_dir: str):
        super().__init__()
        self.files = files
        self.temp_dir = temp_dir

    def expand(self, shards):
        schema = shards | "NestedSchema" >> NestedUnion()
        return (
            shards.pipeline
            | "Once" >> beam.Create([None])
            | "PlanParts" >> beam.FlatMap(plan_parts, beam.pvalue.AsList(shards),
                                          self.files.rows_per_part)
            | "Spread" >> beam.Reshuffle()
            | "WritePart" >> beam.Map(write_part, beam.pvalue.AsSingleton(schema),
                                      self.files.folder, self.temp_dir)
            | "AllParts" >> beam.combiners.ToList()
            | "FinalizeParts" >> beam.Map(finalize_parts, self.files.folder)
        )


class WriteTablesAndParts(beam.PTransform):
    """``write_tables.WriteTables`` for ``-o FOLDER/``: the CSV, flat Parquet and JSON lines
    (those asked for) merged as ever, and the nested table as parts in parallel; with
    none of the former, no step reads every shard on one worker: the report's figures
    are counted shard by shard (``shard_stats.py``). Same outputs as ``WriteTables``,
    the parts' figures joined to ``TABLE_FIGURES``."""

    def __init__(self, final: TableFiles, parts: PartFiles, temp_dir: str,
                 csv_formula_guard: bool = False):
        super().__init__()
        self.final = final
        self.parts = parts
        self.temp_dir = temp_dir
        self.csv_formula_guard = csv_formula_guard

    def expand(self, shards):
        if any(self.final.files()):
            tables = shards | "Merge" >> WriteTables(self.final, self.temp_dir,
                                                     self.csv_formula_guard)
        else:
            columns = shards | "Columns" >> ComputeColumns()
            tables = {COLUMNS: columns, TABLE_FIGURES: shards | "TableFigures" >>
                      CountTableFigures(self.final, columns)}
        parts = shards | "NestedParts" >> WriteNestedParts(self.parts, self.temp_dir)
        figures = tables[TABLE_FIGURES] | "WithParts" >> beam.Map(
            with_parts, beam.pvalue.AsSingleton(parts))
        return {COLUMNS: tables[COLUMNS], TABLE_FIGURES: figures}
