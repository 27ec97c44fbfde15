"""The warehouse formats' cost: CPU of ``--format nested`` against ``--format parquet``,
and of ``--format json`` against ``--format csv``, measured in one command.

    python -m benchmarks.make_archive /tmp/perf/a50k -n 50000 --small-images
    python -m benchmarks.warehouse_formats /tmp/perf/a50k [--repeat 2]

Each run is the CLI in a fresh process on the same archive (DirectRunner defaults); its
CPU is user + sys of the process and its children (``RUSAGE_CHILDREN`` deltas), the
formats take turns within each round and each figure is the best of ``--repeat``, so a
change of load falls on all of them alike. The ratios are the figures to read (the
issue's budget: nested at most 1.3 x parquet, json at most 1.3 x csv); this machine is
shared, absolute seconds are not comparable between commands.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FORMATS = ("csv", "json", "parquet", "nested")
PAIRS = (("nested", "parquet"), ("json", "csv"))


def run_cli(archive: str, output: str, fmt: str) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of one run."""
    env = dict(os.environ, PYTHONPATH=REPO)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "beam_pipeline", archive, "-o", output,
                    "--format", fmt, "--quiet"], check=True, env=env, cwd=REPO)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return cpu, wall


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("archive")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--workdir", help="where the outputs go (default: a temp dir)")
    args = parser.parse_args(argv)
    workdir = args.workdir or tempfile.mkdtemp(prefix="warehouse-bench-")
    os.makedirs(workdir, exist_ok=True)
    figures: dict = {fmt: [] for fmt in FORMATS}
    for round_number in range(args.repeat):
        for fmt in FORMATS:
            # A fresh output each time: no run reuses another's state.
            output = os.path.join(workdir, f"{fmt}-{round_number}.csv")
            figures[fmt].append(run_cli(args.archive, output, fmt))
    best = {fmt: min(runs) for fmt, runs in figures.items()}
    print(f"archive: {args.archive}, best of {args.repeat} runs each")
    for fmt in FORMATS:
        cpu, wall = best[fmt]
        print(f"--format {fmt:8s} CPU {cpu:8.1f} s   wall {wall:8.1f} s")
    for new, anchor in PAIRS:
        print(f"CPU {new} / {anchor} = {best[new][0] / best[anchor][0]:.2f} x   "
              f"(wall {best[new][1] / best[anchor][1]:.2f} x)")


if __name__ == "__main__":
    main()
