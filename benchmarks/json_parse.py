"""What parsing the rows' DICOM JSON back costs the nested outputs: ``json.loads`` against
``transforms.common.json_text.loads`` (orjson where it reads the same), on the lines
of a ``scan.jsonl``, for the union (``NestedSchema.add_texts``) and the rows
(``NestedRows.batch``), one process, the two ways alternating, best of ``--repeat``.

    python -m benchmarks.make_archive /tmp/perf/w10k -n 10000 --small-images
    python -m beam_pipeline /tmp/perf/w10k -o /tmp/perf/json/scan.csv --format json
    python -m benchmarks.json_parse /tmp/perf/json/scan.jsonl
"""

from __future__ import annotations

import argparse
import json
import time
from types import SimpleNamespace

from transforms.common import json_text
from transforms.output import nested, nested_rows

BATCH = 1000
WAYS = {"json.loads": SimpleNamespace(loads=json.loads), "json_text.loads": json_text}


def timed(lines: list, paths: list, way) -> tuple[float, float]:
    """(seconds of the union, seconds of the rows) with ``way.loads``."""
    nested.json_text = nested_rows.json_text = way
    try:
        started = time.perf_counter()
        schema = nested.NestedSchema()
        schema.add_texts(lines)
        union = time.perf_counter() - started
        rows = nested_rows.NestedRows(schema.arrow_schema(), schema)
        started = time.perf_counter()
        for start in range(0, len(lines), BATCH):
            rows.batch(paths[start:start + BATCH], lines[start:start + BATCH])
        return union, time.perf_counter() - started
    finally:
        nested.json_text = nested_rows.json_text = json_text


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("jsonl")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    with open(args.jsonl, encoding="utf-8") as stream:
        lines = stream.read().splitlines()
    paths = [str(number) for number in range(len(lines))]
    best = {name: (float("inf"), float("inf")) for name in WAYS}
    for _ in range(args.repeat):
        for name, way in WAYS.items():
            union, rows = timed(lines, paths, way)
            best[name] = (min(best[name][0], union), min(best[name][1], rows))
    print(f"{len(lines)} lines, {sum(map(len, lines)) / 1e6:.1f} M characters; "
          f"best of {args.repeat}")
    for name, (union, rows) in best.items():
        print(f"{name:16s} union {union:6.2f} s   rows {rows:6.2f} s")


if __name__ == "__main__":
    main()
