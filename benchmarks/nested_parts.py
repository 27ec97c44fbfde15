"""The nested table as one file against a folder of parts written in parallel.

``python -m benchmarks.nested_parts ARCHIVE [--repeats 2] [--rows-per-part 1000]``

Each repeat runs ``python -m beam_pipeline ARCHIVE --format nested --quiet`` once with
``-o OUT/one.csv`` (``one.nested.parquet``, written by the one merge step) and once with
``-o OUT/scan/`` (``scan/part-*.parquet``, written by the workers), in that order and
then the other way round (ABBA), each in a fresh output folder. Wall time and CPU
(user + sys of the process tree, ``run_benchmark.measure``) are medians; the figures to
read are the ratios parts / file, measured in one command. The parts, read in name
order, must be the single file's table.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile

import pyarrow as pa
import pyarrow.parquet as pq

from benchmarks.run_benchmark import count_files, measure


def _run(archive: str, work: str, kind: str, rows_per_part: int) -> dict:
    out = os.path.join(work, kind)
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    target = os.path.join(out, "one.csv") if kind == "file" else os.path.join(out, "scan") + "/"
    command = [sys.executable, "-m", "beam_pipeline", archive, "-o", target, "--quiet",
               "--format", "nested", "--rows-per-part", str(rows_per_part)]
    return measure(command)


def _same_table(work: str) -> bool:
    single = pq.read_table(os.path.join(work, "file", "one.nested.parquet"))
    folder = os.path.join(work, "parts", "scan")
    parts = [pq.read_table(os.path.join(folder, name)) for name in sorted(os.listdir(folder))]
    return pa.concat_tables(parts).equals(single)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("archive")
    parser.add_argument("--repeats", type=int, default=2, help="ABBA pairs")
    parser.add_argument("--rows-per-part", type=int, default=1000)
    args = parser.parse_args(argv)
    files = count_files(args.archive)
    work = tempfile.mkdtemp(prefix="nested-parts-")
    runs: dict = {"file": [], "parts": []}
    try:
        for repeat in range(args.repeats):
            order = ("file", "parts") if repeat % 2 == 0 else ("parts", "file")
            for kind in order:
                result = _run(args.archive, work, kind, args.rows_per_part)
                runs[kind].append(result)
                print(f"{kind:6s} cpu {result['cpu']:7.1f} s  wall {result['seconds']:6.1f} s"
                      f"  load {result['load'][0]:.1f}->{result['load'][1]:.1f}", flush=True)
            if not _same_table(work):
                raise SystemExit("the parts are not the single file's table")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    cpu = {kind: statistics.median(r["cpu"] for r in results) for kind, results in runs.items()}
    wall = {kind: statistics.median(r["seconds"] for r in results)
            for kind, results in runs.items()}
    print(f"{files} files, {os.cpu_count()} cores, medians of {args.repeats} runs each:")
    for kind in ("file", "parts"):
        print(f"  {kind:6s} cpu {cpu[kind]:7.1f} s  wall {wall[kind]:6.1f} s")
    print(f"parts / file: wall x{wall['parts'] / wall['file']:.2f}, "
          f"CPU x{cpu['parts'] / cpu['file']:.2f}")


if __name__ == "__main__":
    main()
