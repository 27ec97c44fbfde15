"""Series rows made where each series is combined, in parallel, and stashed for the one
step that writes the series tables.

``StashSeriesRows`` gets each series' combined summary, makes its row
(``series_records.series_record``) and writes a bundle's rows to files of the run's
temp dir; the writer gets only the files' paths as a side input, and reads them
(``read_stashed``). A stash file is an Arrow IPC file of the rows' file-table cells,
one per cell that has a value, in three columns:

* ``Row``: the row's place in the file;
* ``Cell``: the column's number (``series.column_numbers``) times four plus the part
  of the row it fills (0: the series' one value; or, for a column that varies, 1: the
  number of distinct values, 2 and 3: the smallest and the largest);
* ``Text``: the cell as the CSV shows it (Arrow's text; a file holding a lone surrogate,
  which Arrow's text cannot hold, has binary texts, as Python's ``surrogatepass``
  writes them).

The rows' fixed fields (``series_records.SERIES_FIELDS``), with the few cells the study
rows and the report read, are plain data in the file's metadata (``PLAIN_DATA``,
compressed). So the writer concatenates columns and orders them with numpy: it never
decodes a summary, and for the CSV it walks no row's cells in Python (the Parquet twin
names them again, ``SeriesRows.named_records``). A series' cells, most of the
series stages' bytes (an RT Structure Set's contours are constant columns of its
series), pass through the runner once, for the combine, not a second time as a side
input. A retried bundle writes files of new names, which no output names; the run's
cleanup deletes the temp dir with them.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import uuid
from typing import NamedTuple

import numpy as np
import pyarrow as pa
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from transforms.common.atomic_files import open_write
from transforms.common.collector import collection_paused
from transforms.output.series import column_numbers
from transforms.output.series_packing import PLAIN_DATA, compress, decompress
from transforms.output.series_records import (
    MODALITY, SERIES_FIELDS, SHOULD_BE_CONSTANT, STUDY_DATE, STUDY_DESCRIPTION,
    series_record, set_cells,
)
from transforms.output.spill import BufferedFiles

# Cells of a row the study rows and the report read (series_records.study_records,
# report_figures): kept by name with its fixed fields.
BRIEF_CONSTANT = (MODALITY, STUDY_DATE, STUDY_DESCRIPTION)
# Series per stash file, and their packed summaries' bytes: a bundle writes a file when
# either is reached (an RT Structure Set's series packs to about 100 kB), or at its end.
# A worker holds the rows until then: about 2.5 times their summaries' packed bytes.
STASH_SERIES = 4096
STASH_BYTES = 32 << 20
_SCHEMA = pa.schema([("Row", pa.int32()), ("Cell", pa.int64()), ("Text", pa.large_string())])
_BINARY_SCHEMA = pa.schema([*_SCHEMA][:-1] + [pa.field("Text", pa.large_binary())])
_ROWS = b"series_rows"
# LZ4 halves what the stash writes and the writer reads (the 200,000-file benchmark
# archive's rows: 162 MB, 78 MB compressed).
_WRITE_OPTIONS = pa.ipc.IpcWriteOptions(compression="lz4")


def _number_of(numbers: dict | None):
    if numbers is None:  # the record's columns are numbers already
        return lambda key: key if isinstance(key, int) else None
    return numbers.get


def row_cells(record: dict, numbers: dict | None = None) -> tuple[np.ndarray, list]:
    """A series row's file-table cells as ``(cells, texts)``, ``cell = column number * 4
    + part``; a column the table does not have (no number) is left out, as the tables
    leave it out. ``numbers``: ``{name: number}`` when the record names its columns."""
    number_of = _number_of(numbers)
    constant = record["constant"]
    # Most cells: the constant ones, keyed by number in a stashed row, taken in C loops.
    cells = _numbers_only(constant) if numbers is None else None
    if cells is not None:
        texts = list(constant.values())
    else:  # named, or a column the table lacks
        cells, texts = [], []
        for key, value in constant.items():
            number = number_of(key)
            if number is not None:
                cells.append(number * 4)
                texts.append(value)
    varying = []
    for key, (_, distinct, low, high) in record["varying"].items():
        number = number_of(key)
        if number is None:
            continue
        for part, value in ((1, distinct), (2, low), (3, high)):
            if value is not None:
                varying.append(number * 4 + part)
                texts.append(value if isinstance(value, str) else str(value))  # as csv
    return np.concatenate([np.asarray(cells, np.int64), np.asarray(varying, np.int64)]), texts


def _numbers_only(cells: dict) -> np.ndarray | None:
    """The keys of ``cells`` times four (their value's cell), None unless all are numbers."""
    try:
        return np.fromiter(cells, np.int64, len(cells)) * 4
    except (ValueError, TypeError):
        return None


def _brief(record: dict, key_of) -> list:
    """The row's fixed fields, then the cells the study rows and the report read, by
    name; ``key_of(name)``: the key of that column in the record's cells."""
    constant, varying = record["constant"], record["varying"]
    return [*(record[field] for field in SERIES_FIELDS),
            {name: constant[key_of(name)] for name in BRIEF_CONSTANT
             if key_of(name) in constant},
            [name for name in SHOULD_BE_CONSTANT if key_of(name) in varying]]


def _from_brief(brief: list) -> dict:
    record = dict(zip(SERIES_FIELDS, brief))
    set_cells(record, brief[-2], dict.fromkeys(brief[-1]))
    return record


def _texts_array(texts: list) -> pa.Array:
    try:
        return pa.array(texts, pa.large_string())
    except (pa.ArrowException, UnicodeError):  # a lone surrogate
        return pa.array([text.encode("utf-8", "surrogatepass") for text in texts],
                        pa.large_binary())


def _gathered(row_cells_of: list) -> tuple[np.ndarray, np.ndarray, pa.Array]:
    """Rows' ``row_cells`` -> each cell's row, its cell, and the texts (``_texts_array``)."""
    sizes = [len(cells) for cells, _ in row_cells_of]
    return (np.repeat(np.arange(len(sizes), dtype=np.int64), sizes),
            np.concatenate([cells for cells, _ in row_cells_of] or [np.zeros(0, np.int64)]),
            _texts_array(list(itertools.chain.from_iterable(
                texts for _, texts in row_cells_of))))


class SeriesRows(NamedTuple):
    """Series rows: ``records`` (each a dict of the fixed fields, its ``constant`` and
    ``varying`` holding only the cells the study rows and the report read), and every
    file-table cell: its row (an index into ``records``), its ``cell`` (column number *
    4 + part) and its text, a ``large_string`` array (a list of ``str`` when Arrow cannot
    hold one of them: the writer's CSV fallback takes it)."""

    records: list
    rows: np.ndarray
    cells: np.ndarray
    texts: object

    @classmethod
    def from_records(cls, records: list, numbers: dict) -> "SeriesRows":
        """Full series rows (``series_records.series_record``, cells by column name) as
        the stash holds them, ``numbers`` the table's (``series.column_numbers``): the
        tables written from either are the same."""
        rows, cells, texts = _gathered([row_cells(record, numbers) for record in records])
        return cls([_from_brief(_brief(record, lambda name: name)) for record in records],
                   rows, cells, texts)._as_text()

    @classmethod
    def of_fixed(cls, records: list) -> "SeriesRows":
        """Rows of fixed fields only (the study rows)."""
        return cls(records, np.zeros(0, np.int64), np.zeros(0, np.int64),
                   pa.array([], pa.large_string()))

    def _as_text(self) -> "SeriesRows":
        texts = self.texts
        if isinstance(texts, list) or texts.type == pa.large_string():
            return self
        # Binary: a lone surrogate, which only Python's text holds.
        return self._replace(texts=[text.decode("utf-8", "surrogatepass")
                                    for text in texts.to_pylist()])

    def sorted_by(self, key) -> "SeriesRows":
        """The rows ordered by ``key(record)``, their cells with them."""
        order = sorted(range(len(self.records)), key=lambda index: key(self.records[index]))
        rank = np.empty(len(order), np.int64)
        rank[order] = np.arange(len(order))
        return self._replace(records=[self.records[index] for index in order],
                             rows=rank[self.rows] if len(self.rows) else self.rows)

    def named_records(self, names: dict) -> list:
        """The full rows, cells by column name (``names``: ``{number: name}``), as
        ``series_records.series_record`` makes them (the Parquet writer's and the CSV
        fallback's input)."""
        full = [{**record, "constant": {}, "varying": {}} for record in self.records]
        texts = self.texts if isinstance(self.texts, list) else self.texts.to_pylist()
        for row, cell, text in zip(self.rows.tolist(), self.cells.tolist(), texts):
            name, part = names[cell // 4], cell % 4
            if part == 0:
                full[row]["constant"][name] = text
                continue
            varying = full[row]["varying"]
            found = list(varying.get(name, (None, None, None, None)))
            found[part] = int(text) if part == 1 else text
            varying[name] = tuple(found)
        return full


class StashSeriesRows(BufferedFiles):
    """``(series key, packed summary)``, the table's columns (a side input) -> the path
    of a stash file holding their rows (the module docstring), under a name of its own
    in the run's temp dir, written once and never changed."""

    def __init__(self, temp_dir: str, budget: int = STASH_BYTES):
        super().__init__(temp_dir, STASH_SERIES, budget)
        self._columns = self._numbers = None

    def process(self, keyed, columns):
        if columns is not self._columns:
            self._columns, self._numbers = columns, column_numbers(columns)
        with collection_paused():  # many small objects, all kept until flushed
            record = series_record(keyed, self._numbers)  # its cells by column number
        packed = keyed[1] if isinstance(keyed[1], bytes) else b""
        yield from self.add((_brief(record, self._numbers.get), *row_cells(record),
                             len(packed)))

    def weigh(self, element) -> int:
        return element[-1]  # the packed summary's bytes

    def flush(self, buffer: list) -> str:
        rows, cells, texts = _gathered([(found, texts) for _, found, texts, _ in buffer])
        briefs = [brief for brief, *_ in buffer]
        schema = (_SCHEMA if texts.type == pa.large_string() else _BINARY_SCHEMA) \
            .with_metadata({_ROWS: compress(PLAIN_DATA.encode(briefs))})
        table = pa.Table.from_arrays([pa.array(rows.astype(np.int32)), pa.array(cells), texts],
                                     schema=schema)
        sink = pa.BufferOutputStream()
        with pa.ipc.new_file(sink, schema, options=_WRITE_OPTIONS) as writer:
            writer.write_table(table)
        path = FileSystems.join(self.directory, f"series-rows-{uuid.uuid4().hex}.arrow")
        with open_write(path) as out:
            out.write(sink.getvalue())
        return path


def read_stashed(paths) -> SeriesRows:
    """The rows of the files ``StashSeriesRows`` wrote (one or more per bundle of the
    combine: on a bucket, many small objects, so read 16 at a time), in no set order."""
    records, rows, cells, texts = [], [], [], []
    with concurrent.futures.ThreadPoolExecutor(max_workers=16) as pool:
        for briefs, table in pool.map(_read_stash, sorted(paths)):
            rows.append(table.column("Row").to_numpy().astype(np.int64) + len(records))
            cells.append(table.column("Cell").to_numpy())
            texts.extend(table.column("Text").chunks)
            records.extend(_from_brief(brief) for brief in briefs)
    return SeriesRows(
        records, np.concatenate(rows) if rows else np.zeros(0, np.int64),
        np.concatenate(cells) if cells else np.zeros(0, np.int64),
        _concatenated(texts))._as_text()


def _concatenated(texts: list) -> pa.Array:
    if not texts:
        return pa.array([], pa.large_string())
    if any(chunk.type != pa.large_string() for chunk in texts):
        texts = [chunk.cast(pa.large_binary()) for chunk in texts]
    return pa.concat_arrays(texts)


def _read_stash(path: str) -> tuple[list, pa.Table]:
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as stream:
        table = pa.ipc.open_file(pa.BufferReader(stream.read())).read_all()
    metadata = table.schema.metadata or {}
    schema = table.schema.remove_metadata()
    if _ROWS not in metadata or schema not in (_SCHEMA, _BINARY_SCHEMA):
        raise ValueError(f"{path}: not a file of stashed series rows")
    return PLAIN_DATA.decode(decompress(metadata[_ROWS])), table
