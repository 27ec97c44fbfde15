"""``scan.jsonl`` (``--format json``): the rows' DICOM JSON lines, in the table's order.

Each row carries its line as the cell ``JSON_COLUMN`` (``transforms/reading/dicom_json.py``),
which the table merge numbers one past the table's last column. ``split_json`` takes
those cells out of a chunk before the CSV and Parquet are cut from it, and
``JsonLines`` writes them, one line per row, as the merge hands rows over: the lines are
in ``DicomPath`` order whatever the runner, so the file is byte-identical across runs.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from transforms.output.shard_format import CellRows


def split_json(chunk: CellRows, key: int) -> tuple[CellRows, list | None]:
    """``chunk`` without its cells numbered ``key``, and per row the text of that cell
    (None where a row has none); None instead of the list when no row has one."""
    is_json = chunk.keys == key
    if not is_json.any():
        return chunk, None
    rows = len(chunk.paths)
    row_of_cell = np.repeat(np.arange(rows), np.diff(chunk.offsets))
    texts = [None] * rows
    for row, text in zip(row_of_cell[is_json].tolist(),
                         chunk.values.filter(pa.array(is_json)).to_pylist()):
        texts[row] = text
    keep = ~is_json
    offsets = np.zeros(rows + 1, np.int64)
    np.cumsum(np.bincount(row_of_cell[keep], minlength=rows), out=offsets[1:])
    return chunk._replace(offsets=offsets, keys=chunk.keys[keep],
                          values=chunk.values.filter(pa.array(keep))), texts


class JsonLines:
    """Writes one JSON line per row to ``stream`` (a Beam filesystem's writable file)."""

    def __init__(self, stream):
        self.stream = stream
        self.rows = 0

    def write(self, paths: list, texts: list | None) -> None:
        if texts is None:
            texts = [None] * len(paths)
        missing = [path for path, text in zip(paths, texts) if text is None]
        if missing:  # every row of a --format json run has its line: never drop a file
            raise RuntimeError(f"{len(missing)} rows have no DICOM JSON, e.g. {missing[0]}")
        self.stream.write("".join(text + "\n" for text in texts)
                          .encode("utf-8", "backslashreplace"))
        self.rows += len(texts)

    def close(self) -> None:
        self.stream.close()
