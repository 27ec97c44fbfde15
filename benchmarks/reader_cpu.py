"""CPU per file of extraction alone (no Beam): ``ExtractHeaders``' per-file work plus
``bound_row``, the per-row steps every file goes through, broken down by SOP class.

    python -m benchmarks.reader_cpu /tmp/perf/a5k                        # this tree
    python -m benchmarks.reader_cpu /tmp/perf/a5k --against /work/main --reps 3

With ``--against TREE`` each repetition runs this tree and TREE (a checkout of another
commit) as two subprocesses, alternating, with ``PYTHONPATH`` set to each, and prints
the least and the median CPU ms per file of both (this script runs in both, so TREE need not
have it), the ratio of the least figures (this / TREE) and whether both made
the same rows (a digest of every row's values and VRs). Figures are process CPU time
(``time.process_time``) around each file's step of ``ExtractHeaders.process``, after
one warm-up pass over the same files (the page cache and pydicom's dictionary
look-ups warm, as they are after the first files of a long run). Compare ratios from
one command only: the machine is shared.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import time

CLASSES = {
    "1.2.840.10008.5.1.4.1.1.2": "CT",
    "1.2.840.10008.5.1.4.1.1.4": "MR",
    "1.2.840.10008.5.1.4.1.1.481.3": "RTSTRUCT",
    "1.2.840.10008.5.1.4.1.1.481.5": "RTPLAN",
    "1.2.840.10008.5.1.4.1.1.4.1": "MF-MR",
}
GROUPS = {"CT": "CT/MR", "MR": "CT/MR"}


def list_files(root: str) -> list[str]:
    return sorted(
        os.path.join(folder, name) for folder, _, names in os.walk(root) for name in names
    )


def sop_class(path: str) -> str:
    from pydicom.filereader import read_file_meta_info  # pylint: disable=import-outside-toplevel
    try:
        uid = str(read_file_meta_info(path).get("MediaStorageSOPClassUID", ""))
    except Exception:  # pylint: disable=broad-except
        return "other"
    name = CLASSES.get(uid, "other")
    return GROUPS.get(name, name)


def measure(root: str, limit: int = 0) -> dict:
    """One in-process measurement: CPU seconds and file counts by class, a digest."""
    from apache_beam.io.filesystem import FileMetadata  # pylint: disable=import-outside-toplevel
    import transforms  # pylint: disable=import-outside-toplevel
    from transforms.reading.cells import bound_row  # pylint: disable=import-outside-toplevel
    from transforms.common.batches import BATCH_FILES  # pylint: disable=import-outside-toplevel
    from transforms.reading.extract import ExtractHeaders  # pylint: disable=import-outside-toplevel
    from transforms.common.rows import Row  # pylint: disable=import-outside-toplevel
    from transforms.reading.flatten import FlattenSettings

    paths = list_files(root)
    if limit:
        paths = paths[:limit]
    classes = [sop_class(path) for path in paths]
    files = [FileMetadata(path, os.path.getsize(path), os.path.getmtime(path)) for path in paths]
    settings = FlattenSettings()
    extract = ExtractHeaders(settings)
    extract.setup()
    clock = time.process_time

    def one_pass(record: bool):
        cpu: dict = {}
        digest = hashlib.sha256()
        for first in range(0, len(files), BATCH_FILES):
            batch = files[first:first + BATCH_FILES]
            outcomes = extract.process(batch)
            for index in range(len(batch)):
                started = clock()
                outcome = next(outcomes)
                if isinstance(outcome, Row):
                    outcome, _ = bound_row(outcome, settings.max_values, settings.max_cell_chars)
                spent = clock() - started
                if record:
                    name = classes[first + index]
                    cpu[name] = cpu.get(name, 0.0) + spent
                    if isinstance(outcome, Row):
                        digest.update(repr((outcome.path, sorted(outcome.values.items()),
                                            sorted(outcome.vrs.items()))).encode())
                    else:
                        digest.update(repr((outcome.tag, outcome.value)).encode())
            for _ in outcomes:  # the READER_COUNTS record
                pass
        return cpu, digest.hexdigest()

    one_pass(False)
    cpu, digest = one_pass(True)
    counts: dict = {}
    for name in classes:
        counts[name] = counts.get(name, 0) + 1
    return {"cpu": cpu, "counts": counts, "digest": digest,
            "lean": extract.counts, "module": transforms.__file__}


def _run_tree(tree: str, root: str, limit: int) -> dict:
    env = dict(os.environ, PYTHONPATH=tree)
    out = subprocess.run(
        [sys.executable, os.path.abspath(__file__), root, "--json", "--limit", str(limit)],
        env=env, cwd=tree, check=True, capture_output=True, text=True,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def _per_file(result: dict) -> dict:
    rows = {name: result["cpu"][name] / result["counts"][name] * 1000
            for name in sorted(result["counts"])}
    total = sum(result["cpu"].values()) / sum(result["counts"].values()) * 1000
    rows["all (archive mean)"] = total
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root")
    parser.add_argument("--against", help="another tree to run in the same command")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--limit", type=int, default=0, help="only the first N files")
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.json:
        print(json.dumps(measure(args.root, args.limit)))
        return 0
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    trees = [("this", here)] + ([("against", os.path.abspath(args.against))]
                                if args.against else [])
    results: dict = {label: [] for label, _ in trees}
    for rep in range(args.reps):
        for label, tree in (trees if rep % 2 == 0 else trees[::-1]):
            results[label].append(_run_tree(tree, args.root, args.limit))
    counts = results["this"][0]["counts"]
    # The least CPU of the repetitions is the steadiest figure on a shared machine (other
    # processes only ever add to it); the median is printed next to it.
    figures = {
        label: {name: [_per_file(r)[name] for r in runs] for name in _per_file(runs[0])}
        for label, runs in results.items()
    }
    header = f"{'class':<20}{'files':>7}" + "".join(
        f"{label + ' min (median)':>26}" for label, _ in trees
    ) + (f"{'this/against min':>18}" if args.against else "")
    print(header)
    for name in figures["this"]:
        files = counts.get(name, sum(counts.values()))
        line = f"{name:<20}{files:>7}" + "".join(
            f"{min(figures[label][name]):>15.4f} ({statistics.median(figures[label][name]):.4f})"
            for label, _ in trees
        )
        if args.against:
            line += f"{min(figures['this'][name]) / min(figures['against'][name]):>18.3f}"
        print(line)
    print("CPU ms per file.")
    for label, tree in trees:
        lean = results[label][0]["lean"]
        print(f"{label}: {tree} (lean rows / fallbacks in the last batch: {lean}), "
              f"{args.reps} runs")
    digests = {r["digest"] for runs in results.values() for r in runs}
    print("rows identical across trees and runs:", len(digests) == 1)
    return 0 if len(digests) == 1 else 1


if __name__ == "__main__":
    sys.exit(main())
