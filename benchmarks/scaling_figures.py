"""Per-stage throughput on one core, the figures behind docs/scaling.md.

    PYTHONPATH=. python benchmarks/scaling_figures.py --shards 40 --rows-per-shard 5000

Measures, in this process and on local disk, the code each stage runs:

* extract: ``ExtractHeaders`` on pydicom's bundled CT/MR/RT files (header parse +
  flatten), files per second;
* spill: ``shard_format.write_shard`` (sort a shard's rows by path, write Parquet);
* columns: the ``UnionColumns`` combine over every shard's column dict;
* merge: ``tables.merge_shards``, the final single-worker k-way merge from the shards
  straight to the CSV, rows/s and MB/s.

Rows for format/merge are real extracted rows, repeated under distinct paths.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import tempfile
import time

import pydicom.data

from transforms.output.columns import UnionColumns
from transforms.reading.extract import ExtractHeaders
from transforms.common.rows import Row
from transforms.reading.flatten import FlattenSettings
from transforms.output import shard_format, tables

FILES = ["CT_small.dcm", "MR_small.dcm", "rtplan.dcm", "rtdose.dcm", "JPEG2000.dcm",
         "emri_small.dcm", "SC_rgb.dcm", "US1_J2KR.dcm"]


class _Meta:
    def __init__(self, path):
        self.path = path
        self.size_in_bytes = os.path.getsize(path)
        self.last_updated_in_seconds = os.path.getmtime(path)


def extract_rate(seconds: float = 5.0) -> tuple[float, list[Row]]:
    folder = os.path.join(os.path.dirname(pydicom.data.__file__), "test_files")
    paths = [os.path.join(folder, name) for name in FILES if os.path.exists(os.path.join(folder, name))]
    extract = ExtractHeaders(FlattenSettings())
    extract.setup()
    # Only files that become rows (the others are cheaper: rejected early).
    paths = [p for p in paths if any(isinstance(o, Row) for o in extract.process(_Meta(p)))]
    rows, done, started = [], 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        for path in paths:
            for outcome in extract.process(_Meta(path)):
                if isinstance(outcome, Row) and len(rows) < len(paths):
                    rows.append(outcome)
            done += 1
    return done / (time.perf_counter() - started), rows


def write_shards(rows: list[Row], shards: int, per_shard: int, folder: str) -> list:
    rng = random.Random(1)
    paths = [f"gs://bucket/archive/p{n % 997:04d}/s{n % 13}/IM{n:08d}.dcm" for n in range(shards * per_shard)]
    rng.shuffle(paths)  # files reach workers in no particular order
    out = []
    for s in range(shards):
        shard_rows = []
        for i in range(per_shard):
            row = rows[i % len(rows)]
            path = paths[s * per_shard + i]
            shard_rows.append(Row(path, dict(row.values, DicomPath=path), row.vrs))
        out.append(shard_format.write_shard(os.path.join(folder, f"rows-{s}.parquet"), shard_rows))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shards", type=int, default=40)
    parser.add_argument("--rows-per-shard", type=int, default=5000)
    args = parser.parse_args()

    rate, rows = extract_rate()
    widths = [len(r.values) for r in rows]
    print(f"extract: {rate:,.0f} files/s on one core ({len(rows)} distinct files, "
          f"{min(widths)}-{max(widths)} non-empty columns each)")

    work = tempfile.mkdtemp(prefix="scaling-figures-")
    try:
        started = time.perf_counter()
        shards = write_shards(rows, args.shards, args.rows_per_shard, work)
        total = args.shards * args.rows_per_shard
        elapsed = time.perf_counter() - started
        print(f"spill:   {total / elapsed:,.0f} rows/s on one core ({total:,} rows)")

        started = time.perf_counter()
        union = UnionColumns()
        accumulator = union.create_accumulator()
        for shard in shards:
            accumulator = union.add_input(accumulator, shard.columns)
        columns = union.extract_output(accumulator)
        elapsed = time.perf_counter() - started
        print(f"columns: {len(columns)} columns from {len(shards)} shards in {elapsed * 1000:.1f} ms "
              f"({elapsed / len(shards) * 1e6:.0f} us per shard)")

        output = os.path.join(work, "scan.csv")
        started = time.perf_counter()
        merged = tables.merge_shards(shards, columns, tables.TableFiles(output, None),
                                     temp_dir=work)["rows"]
        elapsed = time.perf_counter() - started
        size = os.path.getsize(output)
        print(f"merge:   {merged / elapsed:,.0f} rows/s, {size / elapsed / 1e6:.0f} MB/s "
              f"({merged:,} rows from {len(shards)} shards, {size / merged:,.0f} bytes/row, "
              f"{size / 1e6:,.0f} MB)")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
