"""What the series and study tables add to a run's CPU: the CLI with and without them.

``python -m benchmarks.series_cpu ARCHIVE [--repeats 3] [--format csv] [--warmup 1]``

Each repeat runs ``python -m beam_pipeline ARCHIVE -o OUT/scan.csv --quiet`` once with
its defaults (series tables written) and once with ``--no-series-tables``, in that order
and then the other way round (ABBA, so a drift of the machine's load falls on both),
each in a fresh output folder, after one run with its defaults that is not counted (the
first run of a command pays for cold caches, and ABBA would always give it to "with":
on the 50,000-file archive it took 3-7 CPU s more than the runs after it). CPU is user
+ sys of the whole process tree as ``run_benchmark.measure`` takes it; the figure to
read is the ratio of the medians (target: at most 1.10). The file tables of the two
runs must be identical.
"""

from __future__ import annotations

import argparse
import filecmp
import os
import shutil
import statistics
import sys
import tempfile

from benchmarks.run_benchmark import count_files, measure


def _run(archive: str, work: str, name: str, formats: str, extra: list) -> dict:
    out = os.path.join(work, name)
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    command = [sys.executable, "-m", "beam_pipeline", archive, "-o",
               os.path.join(out, "scan.csv"), "--quiet", "--format", formats, *extra]
    result = measure(command)
    result["out"] = out
    return result


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("archive")
    parser.add_argument("--repeats", type=int, default=2, help="ABBA pairs")
    parser.add_argument("--format", default="csv")
    parser.add_argument("--warmup", type=int, default=1, help="uncounted runs first")
    args = parser.parse_args(argv)
    files = count_files(args.archive)
    work = tempfile.mkdtemp(prefix="series-cpu-")
    runs: dict = {"with": [], "without": []}
    try:
        for _ in range(args.warmup):
            result = _run(args.archive, work, "warmup", args.format, [])
            print(f"warm-up  cpu {result['cpu']:7.1f} s  wall {result['seconds']:6.1f} s"
                  "  (not counted)", flush=True)
        for repeat in range(args.repeats):
            order = ("with", "without") if repeat % 2 == 0 else ("without", "with")
            for kind in order:
                extra = [] if kind == "with" else ["--no-series-tables"]
                result = _run(args.archive, work, kind, args.format, extra)
                runs[kind].append(result)
                print(f"{kind:8s} cpu {result['cpu']:7.1f} s  wall {result['seconds']:6.1f} s"
                      f"  load {result['load'][0]:.1f}->{result['load'][1]:.1f}", flush=True)
            table = "scan.csv" if "csv" in args.format else "scan.parquet"
            if not filecmp.cmp(os.path.join(work, "with", table),
                               os.path.join(work, "without", table), shallow=False):
                raise SystemExit("the file tables of the two runs differ")
        assert os.path.exists(os.path.join(work, "with", "scan.series.csv"))
        assert not os.path.exists(os.path.join(work, "without", "scan.series.csv"))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    cpu = {kind: statistics.median(r["cpu"] for r in results) for kind, results in runs.items()}
    wall = {kind: statistics.median(r["seconds"] for r in results)
            for kind, results in runs.items()}
    print(f"{files} files, medians of {len(runs['with'])} runs each:")
    for kind in ("without", "with"):
        print(f"  {kind:8s} cpu {cpu[kind]:7.1f} s ({1000 * cpu[kind] / files:.2f} ms/file)"
              f"  wall {wall[kind]:6.1f} s")
    print(f"series tables: CPU x{cpu['with'] / cpu['without']:.3f} "
          f"(+{cpu['with'] - cpu['without']:.1f} s), wall x{wall['with'] / wall['without']:.3f}"
          " (target: CPU at most x1.10)")


if __name__ == "__main__":
    main()
