"""What carrying the rows' DICOM JSON costs after extraction: the row shards written
(``shard_format.write_shard``) and merged into the table and ``scan.jsonl``
(``tables.merge_shards``), with each row's JSON cell and without it, one process, best
of ``--repeat``.

    python -m benchmarks.make_archive /tmp/perf/w10k -n 10000 --small-images
    python -m beam_pipeline /tmp/perf/w10k -o /tmp/perf/json/scan.csv --format json
    python -m benchmarks.json_lines /tmp/perf/json/scan.jsonl

Each line becomes a row: its ``DicomPath``, its top-level text and number values as
cells (as a CSV row holds them, about as many), and, in the runs "with JSON", the line
itself as the cell ``JSON_COLUMN``, as extraction hands rows over. The rows go to
``--shards`` shards in turn, as bundles interleave paths. The figures to read are the
differences (with - without): CPU seconds of this process.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time

from transforms.common.rows import JSON_COLUMN, PATH_COLUMN, Row
from transforms.output import shard_format, tables
from transforms.output.columns import UnionColumns


def rows_of(lines: list, with_json: bool) -> list:
    rows = []
    for line in lines:
        document = json.loads(line)
        path = document[PATH_COLUMN]
        values = {PATH_COLUMN: path}
        for key, element in document.items():
            value = element.get("Value") if isinstance(element, dict) else None
            if value and element.get("vr") != "SQ" and isinstance(value[0], (str, int, float)):
                values[key] = "\\".join(map(str, value))
        if with_json:
            values[JSON_COLUMN] = line
        rows.append(Row(path, values, {name: "LO" for name in values}))
    return rows


def timed(rows: list, shards: int, with_json: bool) -> tuple[float, float]:
    """(CPU seconds writing the shards, CPU seconds merging them)."""
    folder = tempfile.mkdtemp(prefix="json-lines-bench-")
    try:
        started = time.process_time()
        infos = [shard_format.write_shard(os.path.join(folder, f"rows-{number}.parquet"),
                                          rows[number::shards]) for number in range(shards)]
        written = time.process_time() - started
        union = UnionColumns()
        accumulator = union.create_accumulator()
        for info in infos:
            union.add_input(accumulator, info.columns)
        files = tables.TableFiles(os.path.join(folder, "scan.csv"), None,
                                  jsonl=os.path.join(folder, "scan.jsonl") if with_json else None)
        started = time.process_time()
        tables.merge_shards(infos, union.extract_output(accumulator), files, temp_dir=folder)
        return written, time.process_time() - started
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("jsonl")
    parser.add_argument("--rows", type=int, default=6000, help="lines used (default 6000)")
    parser.add_argument("--shards", type=int, default=6)
    parser.add_argument("--repeat", type=int, default=4)
    args = parser.parse_args(argv)
    with open(args.jsonl, encoding="utf-8") as stream:
        lines = stream.read().splitlines()[:args.rows]
    ways = {"without JSON": (rows_of(lines, False), False),
            "with JSON": (rows_of(lines, True), True)}
    best = {name: (float("inf"), float("inf")) for name in ways}
    for _ in range(args.repeat):
        for name, (rows, with_json) in ways.items():  # alternating: load falls on both
            best[name] = tuple(map(min, best[name], timed(rows, args.shards, with_json)))
    megabytes = sum(map(len, lines)) / 1e6
    print(f"{len(lines)} lines ({megabytes:.0f} M characters), {args.shards} shards, "
          f"best of {args.repeat}, CPU s")
    for name, (written, merged) in best.items():
        print(f"  {name:13}  write_shard {written:6.3f}  merge_shards {merged:6.3f}")
    (written, merged), (bare_written, bare_merged) = best["with JSON"], best["without JSON"]
    print(f"  the JSON's cost  write_shard {written - bare_written:6.3f}  "
          f"merge_shards {merged - bare_merged:6.3f}")


if __name__ == "__main__":
    main()
