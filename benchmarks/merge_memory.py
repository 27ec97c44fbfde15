"""Peak memory of the table merge at thousands of shards (transforms/output/tables.py).

    python -m benchmarks.merge_memory --shards 2000 --rows-per-shard 50

Writes ``--shards`` row shards in the shard format from real extracted rows (pydicom's
bundled CT/MR/RT files, repeated under distinct paths, so each shard has the columns of
real headers), then, each in a fresh process, measures peak RSS (``ru_maxrss``):

* anchor: a process that imports the same modules and reads every shard's footer, but
  merges nothing;
* the merge writing CSV and Parquet in one pass, at the default ``MEMORY_BUDGET``;
* the same merge with a quarter of the budget (the bound follows the budget);
* the same merge over a tenth of the shards (how the peak grows with the count).

Figures are printed as MiB and as the peak above the anchor.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

FILES = ["CT_small.dcm", "MR_small.dcm", "rtplan.dcm", "rtdose.dcm", "emri_small.dcm",
         "SC_rgb.dcm", "US1_J2KR.dcm", "JPEG2000.dcm"]


def real_rows():
    import pydicom.data
    from apache_beam.io.filesystem import FileMetadata

    from transforms.reading.extract import ExtractHeaders
    from transforms.reading.flatten import FlattenSettings

    extract = ExtractHeaders(FlattenSettings())
    extract.setup()
    rows = []
    folder = os.path.join(os.path.dirname(pydicom.data.__file__), "test_files")
    for name in FILES:
        path = os.path.join(folder, name)
        if not os.path.exists(path):
            continue
        # One outcome per file, then the call's reader counts (a tagged output).
        outcome = next(iter(extract.process(FileMetadata(path, os.path.getsize(path)))))
        if hasattr(outcome, "values"):
            rows.append(outcome)
    return rows


def make_shards(folder: str, shards: int, rows_per_shard: int) -> list:
    from transforms.common.rows import PATH_COLUMN, Row
    from transforms.output import shard_format

    templates = real_rows()
    infos = []
    number = 0
    for shard in range(shards):
        rows = []
        for _ in range(rows_per_shard):
            template = templates[number % len(templates)]
            # Paths interleave across shards, so the merge really switches between them.
            path = f"/archive/p{number % 997:04d}/s{number:08d}.dcm"
            values = dict(template.values, **{PATH_COLUMN: path})
            rows.append(Row(path, values, template.vrs))
            number += 1
        info = shard_format.write_shard(os.path.join(folder, f"rows-{shard:05d}.parquet"), rows)
        infos.append(info)
    return infos


def child(mode: str, folder: str, count: int, budget: int) -> None:
    from transforms.output.columns import UnionColumns
    from transforms.output import shard_format, tables

    paths = sorted(os.path.join(folder, name) for name in os.listdir(folder)
                   if name.startswith("rows-"))[:count]
    infos = [shard_format.read_info(path)._replace(size=os.path.getsize(path)) for path in paths]
    union = UnionColumns()
    columns = union.extract_output(union.merge_accumulators(
        [union.add_input(union.create_accumulator(), info.columns) for info in infos]))
    started = time.perf_counter()
    figures = {}
    if mode == "merge":
        out = tempfile.mkdtemp(prefix="merge-out-", dir=os.path.dirname(folder))
        figures = tables.merge_shards(
            infos, columns,
            tables.TableFiles(os.path.join(out, "t.csv"), os.path.join(out, "t.parquet")),
            budget=budget, temp_dir=out)
        figures["csv_mib"] = os.path.getsize(os.path.join(out, "t.csv")) / 2**20
        shutil.rmtree(out)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"peak_mib": peak, "seconds": time.perf_counter() - started,
                      "columns": len(columns), **figures}))


def measure(mode, folder, count, budget):
    env = dict(os.environ)
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.merge_memory", "--child", mode, "--folder", folder,
         "--count", str(count), "--budget", str(budget)],
        capture_output=True, text=True, check=True, env=env)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shards", type=int, default=2000)
    parser.add_argument("--rows-per-shard", type=int, default=50)
    parser.add_argument("--child")
    parser.add_argument("--folder")
    parser.add_argument("--count", type=int)
    parser.add_argument("--budget", type=int)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child, args.folder, args.count, args.budget)
        return
    from transforms.output import shard_merge

    root = tempfile.mkdtemp(prefix="merge-memory-")
    folder = os.path.join(root, "shards")
    os.makedirs(folder)
    try:
        infos = make_shards(folder, args.shards, args.rows_per_shard)
        size = sum(os.path.getsize(info.path) for info in infos) / 2**20
        print(f"{len(infos)} shards x {args.rows_per_shard} rows ({size:.1f} MiB of shards)")
        budget = shard_merge.MEMORY_BUDGET
        anchor = measure("footers", folder, len(infos), budget)
        runs = [
            (f"merge {len(infos)} shards, budget {budget >> 20} MiB",
             measure("merge", folder, len(infos), budget)),
            (f"merge {len(infos)} shards, budget {budget >> 22} MiB",
             measure("merge", folder, len(infos), budget // 4)),
            (f"merge {len(infos) // 10} shards, budget {budget >> 20} MiB",
             measure("merge", folder, len(infos) // 10, budget)),
        ]
        print(f"| run | peak RSS | above anchor | seconds | rows |\n|---|---:|---:|---:|---:|")
        print(f"| anchor: imports + {len(infos)} footers read | {anchor['peak_mib']:.0f} MiB "
              f"| 0 | {anchor['seconds']:.1f} | - |")
        for name, run in runs:
            print(f"| {name} | {run['peak_mib']:.0f} MiB | "
                  f"{run['peak_mib'] - anchor['peak_mib']:+.0f} MiB | {run['seconds']:.1f} | "
                  f"{run['rows']} |")
    finally:
        shutil.rmtree(root)


if __name__ == "__main__":
    main()
