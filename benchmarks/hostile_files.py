"""Time per file of the crafted hostile files: ``python -m benchmarks.hostile_files``.

Each crafted file (tests/crafted.py) is read by this tool's extraction (the per-file
read the pipeline runs, limits and bounded cells included) and, in the same command, by
two anchors: DCMTK's ``dcmdump`` (when installed) and the replaced script's method
(``benchmarks/baseline.read_row``: full pydicom read, ``str()`` of every value). Figures
are the best of ``--repeat`` runs, in seconds and as ratios to the anchors.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import subprocess
import tempfile
import time
import warnings

from apache_beam.io.filesystem import FileMetadata

from benchmarks.baseline import read_row
from tests import crafted
from transforms.reading.cells import bound_row
from transforms.reading.extract import ExtractHeaders
from transforms.common.rows import Row
from transforms.reading.flatten import FlattenSettings

FILES = {
    "functional groups, 12,000 frames": crafted.functional_groups,
    "sequence of 20,000 items": crafted.long_sequence,
    "200-deep nesting": crafted.deep_nesting,
    "20 MB text": crafted.huge_text,
    "100,000-value arrays": crafted.long_array,
}


def best(function, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    logging.getLogger("pydicom").setLevel(logging.ERROR)
    warnings.simplefilter("ignore")
    settings = FlattenSettings()
    extract = ExtractHeaders(settings)
    extract.setup()
    dcmdump = shutil.which("dcmdump")
    folder = tempfile.mkdtemp(prefix="hostile-bench-")
    print("| file | size | this tool, s | dcmdump, s | ratio | replaced script, s | ratio |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    try:
        for label, make in FILES.items():
            path = make(os.path.join(folder, "file.dcm"))
            size = os.path.getsize(path)
            metadata = FileMetadata(path, size, 0)

            def ours():
                # One outcome per file, then the call's reader counts (a tagged output).
                outcome = next(iter(extract.process(metadata)))
                assert isinstance(outcome, Row), outcome
                bound_row(outcome, settings.max_values, settings.max_cell_chars)

            ours_s = best(ours, args.repeat)
            script_s = best(lambda: read_row(path), args.repeat)
            if dcmdump:
                dump_s = best(lambda: subprocess.run([dcmdump, path], capture_output=True,
                                                     check=False), args.repeat)
                dump = f"{dump_s:.3f} | {ours_s / dump_s:.1f}x"
            else:
                dump = "- | -"
            print(f"| {label} | {size / 1e6:.1f} MB | {ours_s:.3f} | {dump} | "
                  f"{script_s:.3f} | {ours_s / script_s:.2f}x |")
            os.remove(path)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
