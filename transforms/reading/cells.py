"""Bounded cells: no value makes a cell that a spreadsheet or a CSV reader refuses.

One step applied to every ``Row`` right after it is read, whichever reader made it,
before it is stored: so the CSV, the Parquet file and the incremental state all hold
the same bounded text. Two limits (``FlattenSettings``; 0 = unlimited):

* ``max_values``: a numeric element (``NUMERIC_VRS``) with more values than this is
  written ``<N values>``, as long binary values are written ``<N bytes>`` (an RT Dose's
  DVH Data, a LUT, a contour). A number list is never cut in the middle: a cut list
  would be wrong, not short.
* ``max_cell_chars``: any other cell longer than this is cut, and ends with the
  visible marker ``CUT_MARKER`` (`` [cut: 20,000,000 characters in all]``); the cell,
  marker included, is at most ``max_cell_chars`` long. Cells of typed VRs (numbers,
  dates, times, binary) are never cut: past the limit they become ``<N values>`` /
  ``<N bytes>`` too, so a typed Parquet column never holds a half value.

Spreadsheets keep 32,767 characters per cell and Python's ``csv`` module reads fields
of up to 131,072 by default: the default (32,000) fits both, with room for a marker or
a formula guard. ``DicomPath`` is never cut. The step outputs a count of every bounded
cell by column (the summary's ``cells_bounded``).
"""

from __future__ import annotations

import re
from collections import Counter

import apache_beam as beam

from transforms.common.tags import BOUNDED, ROWS
from transforms.common.rows import BINARY_VRS, JSON_COLUMN, PATH_COLUMN

NUMERIC_VRS = frozenset({"DS", "IS", "US", "SS", "UL", "SL", "UV", "SV", "FL", "FD"})
TYPED_VRS = NUMERIC_VRS | {"DA", "TM", "DT"}
VALUES_MARKER = re.compile(r"<(\d+) values>")
_HEX = re.compile(r"(?:[0-9a-f]{2})+")


def cut_marker(total: int) -> str:
    return f" [cut: {total:,} characters in all]"


def _values_text(text: str) -> str:
    return f"<{text.count(chr(92)) + 1} values>"


def bound_text(vr: str, text: str, max_values: int, max_chars: int) -> tuple[str, str | None]:
    """The cell's text within the limits, and which limit applied (None, "values",
    "chars")."""
    if vr in NUMERIC_VRS and max_values and text.count("\\") >= max_values:
        return _values_text(text), "values"
    if not max_chars or len(text) <= max_chars:
        return text, None
    if vr in TYPED_VRS:
        return _values_text(text), "values"
    if vr in BINARY_VRS and _HEX.fullmatch(text):
        return f"<{len(text) // 2} bytes>", "chars"
    marker = cut_marker(len(text))
    return text[: max(0, max_chars - len(marker))] + marker, "chars"


def _short_but_json(values: dict, texts, limit: int) -> bool:
    """Whether every cell but the DICOM JSON line (--format json/nested: never bounded,
    and mostly longer than the limit) is at most ``limit`` long, tested in C."""
    longest = max(map(len, texts))
    if longest <= limit:
        return True
    json_text = values.get(JSON_COLUMN)
    if json_text is None or len(json_text) != longest:
        return False
    lengths = sorted(map(len, texts))
    return len(lengths) == 1 or lengths[-2] <= limit


def bound_row(row, max_values: int, max_chars: int):
    """``row`` (a ``Row`` or any NamedTuple with ``values`` and ``vrs``) with bounded
    cells, and the names of the columns it bounded."""
    if not max_values and not max_chars:
        return row, []
    changed = None
    vrs = row.vrs
    # Cheap test first: nearly every cell is short.
    limit = min(limit for limit in (max_values, max_chars) if limit)
    texts = row.values.values()
    if texts and _short_but_json(row.values, texts, limit):
        # No cell is long; nothing to count unless a text starts with "<" (a reader's
        # "<N values>"): both tested in C, not per cell.
        joined = "\0".join(texts)
        if not joined.startswith("<") and "\0<" not in joined:
            return row, []
    for name, text in row.values.items():
        if len(text) <= limit or name == PATH_COLUMN or name == JSON_COLUMN:
            if text[:1] == "<" and VALUES_MARKER.fullmatch(text) and vrs.get(name) in NUMERIC_VRS:
                # Made by the reader (a numeric value it did not read): counted too.
                changed = changed if changed is not None else {}
                changed[name] = (text, "values")
            continue
        bounded, which = bound_text(vrs.get(name, ""), text, max_values, max_chars)
        if which is not None:
            if changed is None:
                changed = {}
            changed[name] = (bounded, which)
    if not changed:
        return row, []
    values = dict(row.values)
    for name, (text, _) in changed.items():
        values[name] = text
    return row._replace(values=values), [(name, which) for name, (_, which) in changed.items()]


class BoundCellsFn(beam.DoFn):
    """Row -> the row with bounded cells; ``(column, limit)`` pairs to ``BOUNDED``."""

    def __init__(self, max_values: int, max_chars: int):
        self.max_values = max_values
        self.max_chars = max_chars

    def process(self, row):
        row, bounded = bound_row(row, self.max_values, self.max_chars)
        for pair in bounded:
            yield beam.pvalue.TaggedOutput(BOUNDED, pair)
        yield row


class CountBounded(beam.CombineFn):
    """``(column, limit)`` pairs -> the summary's ``cells_bounded`` entries."""

    def create_accumulator(self):
        return Counter()

    def add_input(self, accumulator, pair):
        accumulator[pair] += 1
        return accumulator

    def merge_accumulators(self, accumulators):
        merged = Counter()
        for accumulator in accumulators:
            merged.update(accumulator)
        return merged

    def extract_output(self, accumulator):
        by_column: Counter = Counter()
        for (name, _), count in accumulator.items():
            by_column[name] += count
        return {
            "cells_bounded": sum(accumulator.values()),
            "cells_bounded_values": sum(c for (_, w), c in accumulator.items() if w == "values"),
            "cells_cut_text": sum(c for (_, w), c in accumulator.items() if w == "chars"),
            "cells_bounded_by_column": dict(sorted(by_column.items())),
        }


class CountBoundedCells(beam.PTransform):
    """``(column, limit)`` pairs -> one dict of ``cells_bounded*`` figures."""

    def expand(self, pairs):
        return pairs | "Count" >> beam.CombineGlobally(CountBounded())


class BoundCells(beam.PTransform):
    """Rows -> {ROWS: bounded rows, BOUNDED: ``(column, limit)`` pairs}. A pipeline with
    several row sources bounds each where it is read and counts their pairs together
    (``CountBoundedCells``): flattening the rows first would make runners materialise
    them between stages."""

    def __init__(self, max_values: int, max_chars: int):
        super().__init__()
        self.max_values = max_values
        self.max_chars = max_chars

    def expand(self, rows):
        bounded = rows | "Bound" >> beam.ParDo(
            BoundCellsFn(self.max_values, self.max_chars)
        ).with_outputs(BOUNDED, main=ROWS)
        return {ROWS: bounded[ROWS], BOUNDED: bounded[BOUNDED]}
