"""(b) What the replaced script did: ``python -m benchmarks.baseline ARCHIVE OUT.csv``.

Full pydicom read of every file (pixel data included), every element's value
stringified with ``str()``, a ``multiprocessing.Pool`` over the machine's cores, and all
rows merged in memory into a pandas DataFrame written as CSV.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import warnings

import pandas
import pydicom

PIXEL_DATA = 0x7FE00010


def files(root: str) -> list[str]:
    return sorted(
        os.path.join(folder, name) for folder, _, names in os.walk(root) for name in names
    )


def read_row(path: str) -> dict:
    warnings.simplefilter("ignore")
    try:
        dataset = pydicom.dcmread(path)
    except Exception:  # pylint: disable=broad-except
        return {"DicomPath": path}
    row = {"DicomPath": path}
    for elem in dataset.file_meta.iterall() if dataset.file_meta else ():
        row[elem.name] = str(elem.value)
    for elem in dataset.iterall():
        if elem.tag == PIXEL_DATA or elem.VR == "SQ":
            continue
        row[elem.name] = str(elem.value)
    return row


def main(argv=None) -> None:
    root, output = (argv or sys.argv[1:])[:2]
    with multiprocessing.Pool(os.cpu_count()) as pool:
        rows = pool.map(read_row, files(root), chunksize=64)
    pandas.DataFrame(rows).to_csv(output, index=False)


if __name__ == "__main__":
    main()
