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
* Parquet (``ChunkColumns.converted``): per filled column, its cells' texts converted
  to the column's type (``types.ColumnConverter``) and scattered to their rows.
* Report figures (``add_to_stats``): fill counts from the cells, and the few columns the
  report shows (``table_stats``), without reading the table back.
"""

from __future__ import annotations

import csv
import io
import re

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transforms.content.csv_safety import FORMULA_STARTS
from transforms.common.rows import PATH_COLUMN
from transforms.output.shard_format import CellRows

NEEDS_QUOTES = r'[,"\r\n]'
QUOTE = pa.scalar('"', pa.large_string())
APOSTROPHE = pa.scalar("'", pa.large_string())
NOTHING = pa.scalar("", pa.large_string())
FORMULA = "^(?:" + "|".join(re.escape(start) for start in FORMULA_STARTS) + ")"


def csv_record(fields) -> str:
    """One CSV record as Python's ``csv`` writes it (CRLF)."""
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerow(fields)
    return buffer.getvalue()


def column_names(columns) -> list[str]:
    names = [column.name for column in columns]
    return names if PATH_COLUMN in names else [PATH_COLUMN] + names


def column_vrs(columns) -> dict:
    vrs = {column.name: column.vrs for column in columns}
    vrs.setdefault(PATH_COLUMN, frozenset({"UR"}))
    return vrs


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
    risky = pc.match_substring_regex(texts, FORMULA).to_numpy(zero_copy_only=False)
    if mask is not None:
        risky &= mask
    at = np.flatnonzero(risky)
    if not len(at):
        return texts
    # Not if_else: pyarrow 18's if_else on a sliced string array reads the wrong bytes.
    prefixed = pc.binary_join_element_wise(APOSTROPHE, texts.take(pa.array(at)), NOTHING)
    pieces = pa.concat_arrays([texts.cast(pa.large_string()), prefixed])
    return pieces.take(pa.array(_refs(len(texts), 0, at, len(texts))))


def _quoted_subset(texts: pa.Array) -> tuple[np.ndarray, pa.Array]:
    """The positions of the texts that need CSV quotes, and those texts quoted."""
    needs = np.flatnonzero(pc.match_substring_regex(texts, NEEDS_QUOTES)
                           .to_numpy(zero_copy_only=False))
    subset = texts.take(pa.array(needs))
    quoted = pc.binary_join_element_wise(QUOTE, pc.replace_substring(subset, '"', '""'),
                                         QUOTE, NOTHING)
    return needs, quoted


def _refs(count: int, base: int, quoted_at: np.ndarray, quoted_base: int) -> np.ndarray:
    """Where each of ``count`` texts is in the pieces: itself, or its quoted copy."""
    refs = np.arange(base, base + count, dtype=np.int64)
    refs[quoted_at] = quoted_base + np.arange(len(quoted_at))
    return refs


def _after_commas(counts: np.ndarray, texts: pa.Array) -> pa.Array:
    comma = pa.scalar(",", pa.large_string())
    return pc.binary_join_element_wise(pc.binary_repeat(comma, pa.array(counts)),
                                       texts.cast(pa.large_string()), NOTHING)


def csv_text(chunk: CellRows, width: int, guarded: np.ndarray | None = None) -> bytes:
    """The chunk's CSV records (``width`` columns, UTF-8, CRLF); ``guarded``: per column,
    whether ``--csv-formula-guard`` applies to it (None: off).

    Each row is laid out as pieces: its path; per cell, the commas that bring it to its
    column followed by its text; the commas up to the last column and CRLF. The few
    texts that need quotes get a quoted piece of their own. One ``take`` over all
    pieces gives the chunk's bytes."""
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
    cells = len(texts)
    quoted_paths_at, quoted_paths = _quoted_subset(paths)
    quoted_texts_at, quoted_texts = _quoted_subset(texts)
    keys = chunk.keys.astype(np.int64)
    starts, ends = chunk.offsets[:-1], chunk.offsets[1:]
    filled = ends > starts
    # Commas before each cell: the columns it moves right of the previous cell (or path).
    before = np.empty_like(keys)
    if cells:
        before[1:] = keys[1:] - keys[:-1]
        before[starts[filled]] = keys[starts[filled]]
    last = np.zeros(rows, np.int64)
    last[filled] = keys[ends[filled] - 1]
    tails = pc.binary_join_element_wise(
        pc.binary_repeat(pa.scalar(",", pa.large_string()), pa.array(width - 1 - last)),
        pa.scalar("\r\n", pa.large_string()), NOTHING)
    pieces = [paths, quoted_paths, _after_commas(before, texts),
              _after_commas(before[quoted_texts_at], quoted_texts), tails]
    bases = np.cumsum([0] + [len(piece) for piece in pieces])
    # Row i: path at 2 i + starts[i], its cell j at 2 i + j + 1, its tail at
    # 2 i + ends[i] + 1.
    order = np.empty(2 * rows + cells, np.int64)
    row_numbers = np.arange(rows)
    order[2 * row_numbers + starts] = _refs(rows, bases[0], quoted_paths_at, bases[1])
    order[2 * row_numbers + ends + 1] = bases[4] + row_numbers
    if cells:
        at = 2 * np.repeat(row_numbers, ends - starts) + np.arange(cells) + 1
        order[at] = _refs(cells, bases[2], quoted_texts_at, bases[3])
    laid = pa.concat_arrays([piece.cast(pa.large_string()) for piece in pieces])
    return text_bytes(laid.take(pa.array(order)))


def text_bytes(texts: pa.Array) -> bytes:
    """The texts one after another, as UTF-8 bytes, straight from Arrow's buffers (its
    text is valid UTF-8: the bytes Python's encoder would give)."""
    texts = texts.cast(pa.large_string())
    offsets = np.frombuffer(texts.buffers()[1], np.int64, len(texts) + 1, texts.offset * 8)
    data = texts.buffers()[2]
    return b"" if data is None else data[int(offsets[0]):int(offsets[-1])].to_pybytes()


class ChunkColumns:
    """A chunk's cells by column: ``cells(column)`` gives a column's texts and rows,
    ``text``/``converted`` the whole column (null where empty). Picking a few columns
    (the report's) scans the keys per column; converting them all (Parquet) sorts the
    cells by column once."""

    def __init__(self, chunk: CellRows, width: int):
        self.rows = len(chunk.paths)
        self.paths = chunk.paths
        self.chunk = chunk
        self.filled = np.bincount(chunk.keys, minlength=width)[:width]
        self.filled[0] = self.rows  # DicomPath
        self._bounds = None
        self._row_of_cell = None

    def _cell_rows(self) -> np.ndarray:
        if self._row_of_cell is None:
            self._row_of_cell = _row_of_cell(self.chunk)
        return self._row_of_cell

    def _group(self) -> None:
        order = np.argsort(self.chunk.keys, kind="stable")
        self._rows = self._cell_rows()[order]
        values = self.chunk.values
        self._values = values.take(pa.array(order)) if len(order) else values
        self._bounds = np.searchsorted(self.chunk.keys[order], np.arange(len(self.filled) + 1))

    def cells(self, column: int, every: bool = False) -> tuple[pa.Array, np.ndarray]:
        """``column``'s texts and their rows; ``every``: more columns will be asked for."""
        if self._bounds is None and every:
            self._group()
        if self._bounds is not None:
            start, end = self._bounds[column], self._bounds[column + 1]
            return self._values.slice(start, end - start), self._rows[start:end]
        at = np.flatnonzero(self.chunk.keys == column)
        return self.chunk.values.take(pa.array(at)), self._cell_rows()[at]

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
        values, rows = self.cells(column, every=True)
        converted = converter.convert_arrow(values)
        array, bad = converted if converted is not None else converter.convert(values.to_pylist())
        return self.scatter(array, rows), bad


def add_to_stats(stats, columns: ChunkColumns, index: dict) -> None:
    """Feed one chunk to the report's ``table_stats.TableStats``; ``index``: column name
    -> number."""
    def text_column(name: str):
        number = index.get(name)
        return None if number is None else columns.text(number)

    stats.add_columns(columns.rows, columns.filled, text_column)


def without_keys(cells, dropped: np.ndarray) -> CellRows:
    """``cells`` without the cells whose key is ``dropped`` (a bool per key)."""
    keep = ~dropped[cells.keys]
    rows = np.repeat(np.arange(len(cells.paths)), np.diff(cells.offsets))[keep]
    offsets = np.zeros(len(cells.paths) + 1, np.int64)
    np.cumsum(np.bincount(rows, minlength=len(cells.paths)), out=offsets[1:])
    return cells._replace(offsets=offsets, keys=cells.keys[keep],
                          values=cells.values.filter(pa.array(keep)))
