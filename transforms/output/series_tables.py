"""Series tables: ``scan.series.csv`` and ``scan.studies.csv`` (and, with ``parquet`` in
``--format``, ``scan.series.parquet`` and ``scan.studies.parquet``, typed).

Rows come from ``series_records.py``; they are sorted by (PatientID, StudyInstanceUID,
SeriesInstanceUID), so the files are the same whatever the runner. Column names are
keywords, valid SQL / BigQuery names: a file-table column is named by pydicom's
dictionary keyword of its tag (``Patient ID (0010,0020)`` -> ``PatientID``), a nested
one by its path (``ReferencedImageSequence_1_ReferencedSOPInstanceUID``, ``_Items`` for
an item count), a private or unknown tag ``Tag_GGGGEEEE`` (after its creator's name,
letters and digits only, when known); a name taken twice gets ``_2``, ``_3``.
A column ``X`` holds the series' value when it is the same in every file; when it
varies in some series, ``X_Distinct`` follows (the number of distinct values there),
and, for single-valued numbers, dates and times, ``X_Min`` and ``X_Max``.

The tables are small (a row per series), so one step writes them: under names unique
to its attempt in the run's temp dir, then renamed into place (``common.atomic_files.finalize_tables``).
Each series row is made in parallel, where its series is combined, and reaches that step
as Arrow columns of its cells (``series_rows.py``): the step orders and lays them out.
"""

from __future__ import annotations

import csv
import functools
import io
import itertools
import re
import uuid
from typing import NamedTuple

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems
from pydicom.datadict import keyword_for_tag

from transforms.common.collector import collection_paused
from transforms.common.rows import PATH_COLUMN
from transforms.common.tags import COLUMNS, SERIES_FIGURES, SHARDS
from transforms.content.csv_safety import guard_cell, guarded_columns
from transforms.output.series import KEY_COLUMNS, bound_kind, column_numbers
from transforms.output.series_records import (
    SERIES_FIELDS, STUDY_FIELDS, report_figures, study_records,
)
from transforms.output.series_rows import SeriesRows, StashSeriesRows, read_stashed
from transforms.output.series_shards import SummarizeSeries
from transforms.output.shard_format import CellRows
from transforms.output.table_chunks import csv_record, csv_text
from transforms.common.atomic_files import open_write
from transforms.output.tables import OUTPUT_COMPRESSION, TEXT_CHUNK_BYTES, finalize_step
from transforms.output.types import ColumnConverter, column_type

KEY_FIELDS = dict(zip(KEY_COLUMNS, ("PatientID", "StudyInstanceUID", "SeriesInstanceUID")))
SERIES_REPORT = "series_report"  # the figures' key of the HTML report's series section
_SEGMENT = re.compile(r"(?:\[(?P<creator>[^\]]*)\] )?[^()]*\((?P<group>[0-9A-F]{4}),"
                      r"(?P<element>[0-9A-F]{4})\)(?: \[(?P<item>\d+)\]| (?P<items>#items))?")
MAX_NAME = 300  # BigQuery's limit on a column name

FIELD_TYPES = {
    "Files": pa.int64(), "Bytes": pa.int64(), "InstanceNumberMin": pa.int64(),
    "InstanceNumberMax": pa.int64(), "MissingInstanceNumbers": pa.int64(),
    "DuplicateInstanceNumbers": pa.int64(), "SlicePositions": pa.int64(),
    "SliceSpacing": pa.float64(), "SliceSpacingSpread": pa.float64(),
    "SliceGaps": pa.int64(), "DuplicatePositions": pa.int64(), "EvenlySpaced": pa.bool_(),
    "AcquisitionSeconds": pa.float64(), "Incomplete": pa.bool_(), "Series": pa.int64(),
    "IncompleteSeries": pa.int64(),
}


class SeriesFiles(NamedTuple):
    """Where the series and study tables go; None: that format is not written."""

    series_csv: str | None
    studies_csv: str | None
    series_parquet: str | None
    studies_parquet: str | None


def series_files(stem: str, formats) -> SeriesFiles:
    """``scan`` (the table's path without its suffix) -> the series tables' paths."""
    csv_on, parquet_on = "csv" in formats, "parquet" in formats
    return SeriesFiles(stem + ".series.csv" if csv_on else None,
                       stem + ".studies.csv" if csv_on else None,
                       stem + ".series.parquet" if parquet_on else None,
                       stem + ".studies.parquet" if parquet_on else None)


@functools.lru_cache(maxsize=1 << 14)
def keyword_name(column: str) -> str:
    """A file-table column's keyword name (see the module docstring), not yet unique."""
    parts = []
    for match in _SEGMENT.finditer(column):
        tag = int(match["group"] + match["element"], 16)
        keyword = keyword_for_tag(tag) if not match["group"][-1] in "13579BDF" else ""
        if not keyword:
            creator = re.sub(r"[^A-Za-z0-9]", "", match["creator"] or "")
            keyword = f"{creator}_Tag_{tag:08X}" if creator else f"Tag_{tag:08X}"
        parts.append(keyword)
        if match["item"]:
            parts.append(match["item"])
        elif match["items"]:
            parts.append("Items")
    name = "_".join(parts) or re.sub(r"[^A-Za-z0-9_]", "_", column)
    if not re.match(r"[A-Za-z_]", name):
        name = "_" + name
    return name[:MAX_NAME - 12]


def unique_names(columns: list, taken=()) -> dict:
    """``{column: keyword name}``, a second use of a name numbered (in column order)."""
    used, names = set(taken), {}
    for column in columns:
        base = name = keyword_name(column)
        number = 1
        while name in used:
            number += 1
            name = f"{base}_{number}"
        used.add(name)
        names[column] = name
    return names


class _Layout(NamedTuple):
    names: list  # output column names
    types: list  # Arrow types
    fields: list  # the record's field for a fixed column, None for a file-table column
    slots: dict  # file-table column -> output column of its value, _Distinct, _Min, _Max
    sources: list  # (file-table column, its VRs) of a text column, None for fixed fields
    guarded: list  # CSV formula guard applies
    cell_slots: np.ndarray  # a stashed cell (series_rows.py) -> its output column, -1: none
    column_names: dict  # column number (series.column_numbers) -> file-table column


def _fixed(fields) -> _Layout:
    names = list(fields)
    types = [FIELD_TYPES.get(name, pa.string()) for name in names]
    return _Layout(names, types, list(names), {}, [None] * len(names),
                   [FIELD_TYPES.get(name) is None for name in names], np.zeros(0, np.int64),
                   {})


def series_layout(series: SeriesRows, table_columns) -> _Layout:
    """The series table's columns: the fixed fields, then the file table's columns (with
    ``_Distinct`` where they vary in some series, and ``_Min``/``_Max`` where bounded)."""
    layout = _fixed(SERIES_FIELDS)
    vrs = {column.name: column.vrs for column in table_columns}
    shown = [column.name for column in table_columns
             if column.name != PATH_COLUMN and column.name not in KEY_COLUMNS]
    numbers = column_numbers(table_columns)
    names = {number: name for name, number in numbers.items()}
    numbered, parts = np.divmod(series.cells, 4)
    varying = {names[number] for number in np.unique(numbered[parts == 1]).tolist()}
    bounded = {names[number] for number in np.unique(numbered[parts == 2]).tolist()}
    keywords = unique_names(shown, taken=layout.names)
    text_guard = guarded_columns(shown, table_columns)
    for column, guard in zip(shown, text_guard):
        keyword, arrow_type = keywords[column], column_type(column, vrs[column])
        source = (column, vrs[column])
        parts = [(keyword, arrow_type, source, guard)]
        if column in varying:
            parts.append((keyword + "_Distinct", pa.int64(), None, False))
            if column in bounded and bound_kind(column):
                parts += [(keyword + "_Min", arrow_type, source, guard),
                          (keyword + "_Max", arrow_type, source, guard)]
        slots = []
        for name, part_type, part_source, part_guard in parts:
            slots.append(len(layout.names))
            layout.names.append(name)
            layout.types.append(part_type)
            layout.fields.append(None)
            layout.sources.append(part_source)
            layout.guarded.append(part_guard)
        layout.slots[column] = tuple(slots) + (None,) * (4 - len(slots))
    cell_slots = np.full(4 * 4 * max(1, len(table_columns)), -1, np.int64)
    for column, slots in layout.slots.items():
        for part, slot in enumerate(slots):
            if slot is not None:
                cell_slots[numbers[column] * 4 + part] = slot
    return layout._replace(cell_slots=cell_slots, column_names=names)


def study_layout() -> _Layout:
    return _fixed(STUDY_FIELDS)


def _columns(records: list, layout: _Layout) -> list[list]:
    """The table as one list of values per output column (None: empty)."""
    count = len(records)
    columns = [[record[field] for record in records] if field else [None] * count
               for field in layout.fields]
    slots = layout.slots
    if not slots:  # no file-table columns (the studies table)
        return columns
    for row, record in enumerate(records):
        for name, value in record["constant"].items():  # the same value in every file
            slot = slots.get(name)
            if slot is not None:
                columns[slot[0]][row] = value
        for name, cell in record["varying"].items():
            slot = slots.get(name)
            if slot is None:
                continue
            for index in (1, 2, 3):
                if slot[index] is not None:
                    columns[slot[index]][row] = cell[index]
    return columns


def _csv_column(values: list, arrow_type, guard: bool) -> list:
    if arrow_type == pa.bool_():
        return [None if value is None else ("true" if value else "false") for value in values]
    if guard:
        return [guard_cell(value) if isinstance(value, str) and value else value
                for value in values]
    return values  # csv writes None as empty, numbers with str()


def dense_csv(records: list, layout: _Layout, formula_guard: bool = False) -> bytes:
    """The table's CSV by Python's ``csv``, every cell of every row (``sparse_csv_parts``'
    reference, and its fallback)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(layout.names)
    writer.writerows(zip(*(_csv_column(values, arrow_type, formula_guard and guard)
                           for values, arrow_type, guard
                           in zip(_columns(records, layout), layout.types, layout.guarded))))
    return buffer.getvalue().encode("utf-8", "backslashreplace")


def _text(value, boolean: bool) -> str:
    if boolean:
        return "true" if value else "false"
    return value if isinstance(value, str) else str(value)  # as csv writes it


def sparse_csv_parts(series: SeriesRows, layout: _Layout, formula_guard: bool = False,
                     chunk_bytes: int = TEXT_CHUNK_BYTES):
    """The same bytes as ``dense_csv`` of the same rows, in parts (the header, then rows
    of about ``chunk_bytes`` of text each), from the cells that have a value: a series
    row fills a few hundred of thousands of columns, and the empty ones cost only their
    commas (``table_chunks.csv_text`` lays the rows out, quotes and guards). The fixed
    fields' cells are made here; the file-table cells come as Arrow columns, ordered
    with them by numpy (one sort of row * width + column). Parts are cut for
    the reason the file table's chunks are (``tables.py``): Arrow's pool hands a block
    of 32 MB or more back to the kernel when it is freed, so one part of the whole
    table (37 MB for the benchmark archive) faulted its memory in afresh at every step.
    Every part's cells are made before this returns, so a text Arrow cannot hold (a
    lone surrogate) raises here, before anything is written."""
    if isinstance(series.texts, list):  # a text Arrow cannot hold: dense_csv writes it
        raise UnicodeError("a series cell is not valid UTF-8")
    records = series.records
    booleans = [arrow_type == pa.bool_() for arrow_type in layout.types]
    fixed = [(index, field, booleans[index]) for index, field in enumerate(layout.fields)
             if field and index]
    paths, rows, keys, texts = [], [], [], []
    for row, record in enumerate(records):
        paths.append(_text(record[layout.fields[0]], booleans[0]))
        for index, field, boolean in fixed:
            value = record[field]
            if value is not None:
                rows.append(row)
                keys.append(index)
                texts.append(_text(value, boolean))
    width = len(layout.names)
    # -1: a cell of no column shown (a key column, or one the table lacks).
    cell_slots = layout.cell_slots[series.cells] if len(series.cells) else series.cells
    rows = np.concatenate([np.asarray(rows, np.int64), series.rows])
    keys = np.concatenate([np.asarray(keys, np.int64), cell_slots])
    shown = np.flatnonzero(keys >= 0)
    order = shown[np.argsort(rows[shown] * width + keys[shown], kind="stable")]
    offsets = np.zeros(len(records) + 1, np.int64)
    np.cumsum(np.bincount(rows[shown], minlength=len(records)), out=offsets[1:])
    keys = keys[order].astype(np.int32)
    values = pa.concat_arrays([pa.array(texts, pa.large_string()), series.texts]) \
        .take(pa.array(order))  # row, column order
    # Rows per part: their texts' bytes and commas, at least one row a part.
    sizes = np.frombuffer(values.buffers()[1], np.int64, len(values) + 1, values.offset * 8)
    row_ends = np.cumsum(sizes[offsets[1:]] - sizes[offsets[:-1]] + width)
    parts, first = [], 0
    while first < len(records):
        last = max(first + 1, int(np.searchsorted(
            row_ends, (row_ends[first - 1] if first else 0) + chunk_bytes, "right")))
        low, high = offsets[first], offsets[last]
        parts.append(CellRows(paths[first:last], None, None, offsets[first:last + 1] - low,
                              keys[low:high], values[low:high]))
        first = last
    guarded = np.array([formula_guard and guard for guard in layout.guarded]) \
        if formula_guard else None
    header = csv_record(layout.names).encode("utf-8", "backslashreplace")
    return itertools.chain((header,), (csv_text(part, width, guarded) for part in parts))


def write_table(series: SeriesRows, layout: _Layout, csv_path: str | None,
                parquet_path: str | None, formula_guard: bool = False) -> None:
    if csv_path:
        try:
            parts = sparse_csv_parts(series, layout, formula_guard)
        except (pa.ArrowException, UnicodeError):  # a lone surrogate: csv escapes it
            parts = (dense_csv(series.named_records(layout.column_names), layout,
                               formula_guard),)
        with open_write(csv_path) as out:
            for part in parts:
                out.write(part)
    if parquet_path:
        records = series.named_records(layout.column_names)
        arrays = []
        for values, arrow_type, source in zip(_columns(records, layout), layout.types,
                                              layout.sources):
            if source is None:
                arrays.append(pa.array(values, type=arrow_type))
            elif all(value is None for value in values):
                arrays.append(pa.nulls(len(values), arrow_type))
            else:  # DICOM text, typed as the file table types the column
                arrays.append(ColumnConverter(arrow_type, source[1]).convert(values)[0])
        schema = pa.schema([pa.field(name, array.type)
                            for name, array in zip(layout.names, arrays)])
        with open_write(parquet_path) as out:
            pq.write_table(pa.Table.from_arrays(arrays, schema=schema), out,
                           compression=OUTPUT_COMPRESSION)


def _key(record: dict) -> tuple:
    return record["PatientID"], record["StudyInstanceUID"], record.get("SeriesInstanceUID", "")


def _hide(records: list, hidden: list) -> list:
    """Records with the keys read only for grouping (left out by the tag selection)
    emptied: the series tables hold what the file table holds."""
    fields = [KEY_FIELDS[name] for name in hidden]
    if not fields:
        return records
    return [{**record, **dict.fromkeys(fields, "")} for record in records]


def _write_step(_, stashed, table_columns, final: SeriesFiles, temp_dir: str,
                formula_guard: bool = False, hidden: tuple = ()) -> dict:
    from transforms.inputs import storage

    storage.prepare_filesystems()
    with collection_paused():
        # Sorted by the keys as read, so the order is the same whether they are shown or not.
        series = read_stashed(stashed).sorted_by(_key)
    studies = study_records(series.records)
    series = series._replace(records=_hide(series.records, hidden))
    studies = _hide(sorted(studies, key=_key), hidden)
    attempt = uuid.uuid4().hex
    temp = SeriesFiles(*(
        FileSystems.join(temp_dir, f"{name}-{attempt}.{suffix}") if path else None
        for path, name, suffix in zip(final, ("series", "studies") * 2,
                                      ("csv", "csv", "parquet", "parquet"))
    ))
    write_table(series, series_layout(series, table_columns), temp.series_csv,
                temp.series_parquet, formula_guard)
    write_table(SeriesRows.of_fixed(studies), study_layout(), temp.studies_csv,
                temp.studies_parquet, formula_guard)
    figures = report_figures(series.records, studies)
    figures["hidden_keys"] = [KEY_FIELDS[name] for name in hidden]
    return {"renames": {t: f for t, f in zip(temp, final) if t}, SERIES_REPORT: figures}


class WriteSeriesTables(beam.PTransform):
    """{SHARDS, COLUMNS} -> {SERIES_FIGURES: one dict of figures (``SERIES_REPORT``),
    emitted once the series and study tables are in place}. The shards are read again,
    one partial summary per series each, combined per series, made into its row and
    stashed in files of the temp dir; the one step that writes the tables reads them,
    and makes the study rows from them."""

    def __init__(self, final: SeriesFiles, temp_dir: str, csv_formula_guard: bool = False,
                 hidden_keys=()):
        super().__init__()
        self.final = final
        self.temp_dir = temp_dir
        self.csv_formula_guard = csv_formula_guard
        self.hidden_keys = tuple(hidden_keys)  # key columns read only for grouping

    def expand(self, records):
        columns = records[COLUMNS]
        stashed = (records[SHARDS]
                   | "Summarize" >> SummarizeSeries(columns)
                   | "Stash" >> beam.ParDo(StashSeriesRows(self.temp_dir),
                                           beam.pvalue.AsSingleton(columns)))
        figures = (
            columns.pipeline
            | "Once" >> beam.Create([None])
            | "Write" >> beam.Map(_write_step, beam.pvalue.AsList(stashed),
                                  beam.pvalue.AsSingleton(columns), self.final,
                                  self.temp_dir, self.csv_formula_guard, self.hidden_keys)
            | "Finalize" >> beam.Map(finalize_step)
        )
        return {SERIES_FIGURES: figures}
