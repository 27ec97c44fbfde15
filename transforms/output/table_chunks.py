"""Table chunks: merged rows, a chunk at a time, turned into CSV text and Parquet columns.

The k-way merge (``tables.py``) hands rows over in path order as (shard batch, row). A
chunk gathers up to a row group of them as ``CellRows`` whose keys are the table's
column numbers (``DicomPath`` is 0), each row's cells in column order. Everything after
that is vectorised (numpy, ``pyarrow.compute``), so it costs what the rows hold, not
rows x columns: a wide archive (thousands of columns, a CT row fills ~100) is mostly
empty cells, and those cost nothing but their commas.

* CSV (``csv_text``): RFC 4180 as Python's ``csv`` writes it (``QUOTE_MINIMAL``, CRLF):
  a cell is quoted when it holds ``,``, ``"``, CR or LF, quotes doubled. Each row is
  ``path``, then per filled cell as many commas as columns it moves right and its text,
  then the commas up to the last column and CRLF; one ``take`` lays out the chunk.
* Parquet (``parquet_columns``): per filled column, its cells' texts converted to the
  column's type (``types.ColumnConverter``) and scattered to their rows.
* Report figures (``add_to_stats``): fill counts from the cells, and the few columns the
  report shows (``table_stats``), without reading the table back.
"""

from __future__ import annotations

import re

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transforms.csv_safety import FORMULA_STARTS
from transforms.output.shard_format import CellRows

NEEDS_QUOTES = r'[,"\r\n]'
QUOTE = pa.scalar('"', pa.large_string())
APOSTROPHE = pa.scalar("'", pa.large_string())
NOTHING = pa.scalar("", pa.large_string())
FORMULA = "^(?:" + "|".join(re.escape(start) for start in FORMULA_STARTS) + ")"


class ChunkBuilder:
    """Collects merged rows (a ``CellRows`` batch whose keys are already column numbers,
    and a row of it) and hands them over as one ``CellRows``."""

    def __init__(self):
        self._reset()

    def _reset(self):
        self._bases: dict = {}  # id(batch) -> where its cells start in the chunk's pool
        self._batches: list = []  # kept alive while the chunk refers to them
        self._pool = 0
        self.paths, self.sizes, self.mtimes = [], [], []
        self._starts, self._lengths = [], []

    def __len__(self) -> int:
        return len(self.paths)

    def add(self, batch, offsets: list, index: int) -> None:
        """Row ``index`` of ``batch``; ``offsets``: ``batch.offsets`` as a list."""
        base = self._bases.get(id(batch))
        if base is None:
            base = self._bases[id(batch)] = self._pool
            self._batches.append(batch)
            self._pool += len(batch.keys)
        start = offsets[index]
        self._starts.append(base + start)
        self._lengths.append(offsets[index + 1] - start)
        self.paths.append(batch.paths[index])
        self.sizes.append(batch.sizes[index])
        self.mtimes.append(batch.mtimes[index])

    def take(self) -> CellRows:
        """The rows added since the last ``take``, in the order they were added."""
        lengths = np.asarray(self._lengths, np.int64)
        offsets = np.zeros(len(lengths) + 1, np.int64)
        np.cumsum(lengths, out=offsets[1:])
        gather = np.repeat(np.asarray(self._starts, np.int64) - offsets[:-1], lengths)
        gather += np.arange(offsets[-1], dtype=np.int64)
        if self._batches:
            keys = np.concatenate([batch.keys for batch in self._batches])[gather]
            values = pa.concat_arrays([batch.values for batch in self._batches])
            values = values.take(pa.array(gather))
        else:
            keys, values = np.zeros(0, np.int32), pa.array([], pa.large_string())
        chunk = CellRows(self.paths, self.sizes, self.mtimes, offsets, keys, values)
        self._reset()
        return chunk


def _row_of_cell(chunk: CellRows) -> np.ndarray:
    return np.repeat(np.arange(len(chunk.paths)), np.diff(chunk.offsets))


def _guarded(texts: pa.Array, mask) -> pa.Array:
    """``'`` before the texts that would run as a spreadsheet formula, where ``mask``."""
    risky = pc.match_substring_regex(texts, FORMULA)
    if mask is not None:
        risky = pc.and_(risky, pa.array(mask))
    if not pc.any(risky).as_py():
        return texts
    return pc.if_else(risky, pc.binary_join_element_wise(APOSTROPHE, texts, NOTHING), texts)


def _quoted(texts: pa.Array) -> pa.Array:
    needs = pc.match_substring_regex(texts, NEEDS_QUOTES)
    if not pc.any(needs).as_py():
        return texts
    quoted = pc.binary_join_element_wise(QUOTE, pc.replace_substring(texts, '"', '""'), QUOTE,
                                         NOTHING)
    return pc.if_else(needs, quoted, texts)


def csv_text(chunk: CellRows, width: int, guarded: np.ndarray | None = None) -> bytes:
    """The chunk's CSV records (``width`` columns, UTF-8, CRLF); ``guarded``: per column,
    whether ``--csv-formula-guard`` applies to it (None: off)."""
    rows = len(chunk.paths)
    if not rows:
        return b""
    paths = pa.array(chunk.paths, pa.large_string())
    texts = chunk.values
    if guarded is not None:
        if guarded[0]:
            paths = _guarded(paths, None)
        if len(texts):
            texts = _guarded(texts, guarded[chunk.keys])
    paths, texts = _quoted(paths), _quoted(texts) if len(texts) else texts
    keys = chunk.keys.astype(np.int64)
    starts, ends = chunk.offsets[:-1], chunk.offsets[1:]
    filled = ends > starts
    # Commas before each cell: the columns it moves right of the previous cell (or path).
    before = np.empty_like(keys)
    if len(keys):
        before[1:] = keys[1:] - keys[:-1]
        before[starts[filled]] = keys[starts[filled]]
    last = np.zeros(rows, np.int64)
    last[filled] = keys[ends[filled] - 1]
    comma = pa.scalar(",", pa.large_string())
    pieces = pc.binary_join_element_wise(pc.binary_repeat(comma, pa.array(before)), texts,
                                         NOTHING)
    tails = pc.binary_join_element_wise(pc.binary_repeat(comma, pa.array(width - 1 - last)),
                                        pa.scalar("\r\n", pa.large_string()), NOTHING)
    # Lay out path, cells, tail per row: row i starts at 2 i + starts[i] in the output.
    first = 2 * np.arange(rows) + starts
    order = np.empty(2 * rows + len(keys), np.int64)
    order[first] = np.arange(rows)
    order[first + 1 + (ends - starts)] = rows + len(keys) + np.arange(rows)
    is_cell = np.ones(len(order), bool)
    is_cell[first] = False
    is_cell[first + 1 + (ends - starts)] = False
    order[is_cell] = rows + np.arange(len(keys))
    laid = pa.concat_arrays([paths, pieces.cast(pa.large_string()), tails]).take(pa.array(order))
    offsets = np.frombuffer(laid.buffers()[1], np.int64, len(laid) + 1, laid.offset * 8)
    return laid.buffers()[2][int(offsets[0]):int(offsets[-1])].to_pybytes()


class ChunkColumns:
    """A chunk's cells grouped by column: ``cells(column)`` gives a filled column's texts
    and rows, ``array(column, ...)`` the whole column (null where empty)."""

    def __init__(self, chunk: CellRows, width: int):
        self.rows = len(chunk.paths)
        self.paths = chunk.paths
        order = np.argsort(chunk.keys, kind="stable")
        self._rows = _row_of_cell(chunk)[order]
        self._values = chunk.values.take(pa.array(order)) if len(order) else chunk.values
        self.bounds = np.searchsorted(chunk.keys[order], np.arange(width + 1))
        self.filled = np.diff(self.bounds)
        self.filled[0] = self.rows  # DicomPath

    def cells(self, column: int) -> tuple[pa.Array, np.ndarray]:
        start, end = self.bounds[column], self.bounds[column + 1]
        return self._values.slice(start, end - start), self._rows[start:end]

    def scatter(self, values: pa.Array, rows: np.ndarray) -> pa.Array:
        """``values`` (one per row in ``rows``) placed in a column of ``self.rows``."""
        where = np.full(self.rows, -1, np.int64)
        where[rows] = np.arange(len(rows))
        return values.take(pa.array(where, mask=where < 0))

    def text(self, column: int) -> pa.Array:
        """A column as strings, null where empty."""
        if column == 0:
            return pa.array(self.paths, pa.string())
        if not self.filled[column]:
            return pa.nulls(self.rows, pa.string())
        values, rows = self.cells(column)
        return self.scatter(values.cast(pa.string()), rows)

    def converted(self, column: int, converter) -> tuple[pa.Array, int]:
        """A column converted by ``converter`` (``types.ColumnConverter``) and the number
        of values that did not parse."""
        if column == 0:
            return pa.array(self.paths, converter.type), 0
        if not self.filled[column]:
            return pa.nulls(self.rows, converter.type), 0
        values, rows = self.cells(column)
        if converter.parse is None and not converter.is_list:
            return self.scatter(values.cast(converter.type), rows), 0
        array, bad = converter.convert(values.to_pylist())
        return self.scatter(array, rows), bad


def add_to_stats(stats, columns: ChunkColumns, index: dict) -> None:
    """Feed one chunk to the report's ``table_stats.TableStats``; ``index``: column name
    -> number."""
    def text_column(name: str):
        number = index.get(name)
        return None if number is None else columns.text(number)

    stats.add_columns(columns.rows, columns.filled, text_column)
