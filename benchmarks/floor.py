"""(c) The Python floor: ``python -m benchmarks.floor ARCHIVE``.

One process, a plain loop of ``dcmread(stop_before_pixels=True)`` over every file and
no value conversion at all: what merely parsing the headers with pydicom costs.
"""

from __future__ import annotations

import sys
import warnings

import pydicom

from benchmarks.baseline import files


def main(argv=None) -> None:
    warnings.simplefilter("ignore")
    elements = 0
    for path in files((argv or sys.argv[1:])[0]):
        dataset = pydicom.dcmread(path, stop_before_pixels=True, defer_size=4096)
        elements += len(dataset)
    print(elements)


if __name__ == "__main__":
    main()
