"""Time the CLI against the replaced script and the pydicom floor, in one run.

``python -m benchmarks.run_benchmark ARCHIVE [--runs a,b,c] [--work DIR]``

Each contender runs as a child process of this one:

(a) ``python -m beam_pipeline ARCHIVE -o OUT.csv --quiet``: the CLI, default settings;
(b) ``python -m benchmarks.baseline``: the replaced script (full read, ``str()``,
    ``multiprocessing.Pool``, pandas in-memory merge);
(c) ``python -m benchmarks.floor``: one process, ``dcmread(stop_before_pixels=True)``;
(a') the CLI forced to the in-memory runner (one process), to check the default.

Measured for each: wall time -> files/s; CPU seconds (user + sys) of the whole tree,
from getrusage(RUSAGE_CHILDREN), which on a shared machine shows what wall time
hides; peak RSS of the whole process tree (psutil,
sampled every 50 ms, sum of RSS over the process and all its descendants, so pages
shared between forked processes count more than once); bytes read, from
``/proc/self/io`` of this benchmark process before and after the child: Linux folds a
reaped child's I/O counters into its parent's, so the delta covers the whole tree.
``rchar`` counts every byte returned by read() calls (DICOM files, Python modules,
pipes and sockets between Beam workers, temporary shards), ``read_bytes`` what came
from the block device (0 when the archive sits in the page cache).

Separately, the DICOM bytes the extraction itself reads per file are counted exactly:
``ExtractHeaders`` runs in-process on a sample of files with its ``open`` counting at
the OS level, and that is compared with each file's header size (the offset of the
pixel data).
"""

from __future__ import annotations

import argparse
import io
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

import psutil

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def proc_io() -> dict:
    with open("/proc/self/io", encoding="ascii") as stream:
        return {key: int(value) for key, value in (line.split(": ") for line in stream)}


def count_files(root: str) -> int:
    return sum(len(names) for _, _, names in os.walk(root))


def measure(command: list[str], interval: float = 0.05) -> dict:
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    before = proc_io()
    cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    child = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL)
    parent = psutil.Process(child.pid)
    peak = 0
    while child.poll() is None:
        total = 0
        try:
            tree = [parent] + parent.children(recursive=True)
        except psutil.NoSuchProcess:
            tree = []
        for process in tree:
            try:
                total += process.memory_info().rss
            except psutil.NoSuchProcess:
                pass
        peak = max(peak, total)
        time.sleep(interval)
    seconds = time.perf_counter() - started
    after = proc_io()
    cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if child.returncode != 0:
        raise SystemExit(f"{command} failed with status {child.returncode}")
    return {
        "seconds": seconds,
        "cpu": (cpu_after.ru_utime + cpu_after.ru_stime)
        - (cpu_before.ru_utime + cpu_before.ru_stime),
        "peak_rss": peak,
        "rchar": after["rchar"] - before["rchar"],
        "read_bytes": after["read_bytes"] - before["read_bytes"],
    }


class _CountingFile(io.FileIO):
    read_total = 0

    def readinto(self, buffer):
        count = super().readinto(buffer)
        _CountingFile.read_total += count or 0
        return count

    def read(self, size=-1):
        data = super().read(size)
        _CountingFile.read_total += len(data or b"")
        return data


def dicom_bytes_per_file(root: str, sample: int = 200) -> tuple[float, float, float]:
    """(mean bytes read per file by ExtractHeaders, mean header size, max excess)."""
    import transforms.extract as extract
    from transforms.flatten import FlattenSettings

    paths = [os.path.join(folder, name) for folder, _, names in os.walk(root) for name in names]
    paths = paths[:: max(1, len(paths) // sample)][:sample]
    original = extract.open_file
    extract.open_file = lambda path: io.BufferedReader(_CountingFile(path, "rb"))
    try:
        fn = extract.ExtractHeaders(FlattenSettings())
        fn.setup()
        read, headers, excess = 0, 0, 0
        for path in paths:
            _CountingFile.read_total = 0
            fn._read(path, os.path.getsize(path))  # pylint: disable=protected-access
            with open(path, "rb") as stream:
                data = stream.read()
            header = data.rfind(b"\xe0\x7f\x10\x00")  # (7FE0,0010) Pixel Data
            header = len(data) if header < 0 else header
            read += _CountingFile.read_total
            headers += header
            excess = max(excess, _CountingFile.read_total - header)
    finally:
        extract.open_file = original
    return read / len(paths), headers / len(paths), excess


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("archive")
    parser.add_argument("--runs", default="a,a1,b,c",
                        help="comma-separated subset of a,a1,b,c (a1: the in-memory runner, "
                        "to check the multi-process default still pays)")
    parser.add_argument("--work", help="folder for outputs (default: a temporary one)")
    parser.add_argument("--cli-args", default="", help="extra CLI flags for (a)")
    args = parser.parse_args(argv)
    archive = os.path.abspath(args.archive)
    work = args.work or tempfile.mkdtemp(prefix="dicom-bench-")
    os.makedirs(work, exist_ok=True)
    files = count_files(archive)
    print(f"archive {archive}: {files} files; {os.cpu_count()} cores", flush=True)
    commands = {
        "a": [sys.executable, "-m", "beam_pipeline", archive,
              "-o", os.path.join(work, "a.csv"), "--quiet", *args.cli_args.split()],
        "a1": [sys.executable, "-m", "beam_pipeline", archive,
               "-o", os.path.join(work, "a1.csv"), "--quiet",
               "--direct_running_mode=in_memory", "--direct_num_workers=1"],
        "b": [sys.executable, "-m", "benchmarks.baseline", archive, os.path.join(work, "b.csv")],
        "c": [sys.executable, "-m", "benchmarks.floor", archive],
    }
    labels = {
        "a": "(a) dicom-meta-extract CLI, defaults",
        "a1": "(a') CLI with the in-memory runner, 1 process",
        "b": "(b) replaced script (full read, str(), Pool, pandas)",
        "c": "(c) pydicom floor (1 process, stop_before_pixels)",
    }
    results = {}
    for key in args.runs.split(","):
        results[key] = measure(commands[key])
        r = results[key]
        print(f"{labels[key]}: {r['seconds']:.1f} s", flush=True)
    print()
    print("| run | seconds | files/s | CPU s (tree) | peak RSS (tree) | rchar/file "
          "| read_bytes/file |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for key, r in results.items():
        print(f"| {labels[key]} | {r['seconds']:.1f} | {files / r['seconds']:,.0f} | "
              f"{r['cpu']:.1f} | "
              f"{r['peak_rss'] / 2**20:,.0f} MiB | {r['rchar'] / files / 1024:,.1f} KiB | "
              f"{r['read_bytes'] / files / 1024:,.1f} KiB |")
    if "a" in results and "b" in results:
        print(f"\n(a) is {results['b']['seconds'] / results['a']['seconds']:.1f}x "
              f"as fast as (b) in this run")
    if "a" in results:
        read, header, excess = dicom_bytes_per_file(archive)
        print(f"ExtractHeaders reads {read / 1024:.1f} KiB of DICOM per file "
              f"(exact, 200-file sample) for a {header / 1024:.1f} KiB header; "
              f"at most {excess / 1024:.1f} KiB past the header")
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
