"""The CLI against DCMTK's ``dcmdump`` and the replaced script, in one run, as ratios.

``python -m benchmarks.run_benchmark ARCHIVE [--runs d,a,b] [--memory-at OTHER_ARCHIVE]``

Each contender runs as a child process of this one, on the same files, one after the
other:

(d) the anchor: ``find ARCHIVE -type f -print0 | xargs -0 -P<cores> -n 500 dcmdump -M -q``
    (DCMTK, every header dumped on all cores; ``apt-get install -y dcmtk``). It runs
    before and after (a); ratios use the mean of the two, and both are shown, so a
    change in machine load during the run is visible;
(a) ``python -m beam_pipeline ARCHIVE -o OUT.csv --quiet``: the CLI, default settings;
(a1) the CLI forced to the in-memory runner (one process), to check the local default;
(a2) the CLI forced to SDK worker processes (one per core), idem;
(b) ``python -m benchmarks.baseline``: the replaced script's method (full read,
    ``str()``, ``multiprocessing.Pool``, pandas in-memory merge);
(c) ``python -m benchmarks.floor``: one process, ``dcmread(stop_before_pixels=True)``.

Measured for each: wall time; CPU time (user + sys) of the whole process tree, as the
larger of ``getrusage(RUSAGE_CHILDREN)`` (waited-for descendants) and the sum over every
process seen in the tree of its last sampled CPU time (psutil, every 100 ms: catches
workers that are not waited for); peak RSS of the tree (sum over the process and its
descendants, sampled every 100 ms; pages shared between processes count more than once);
bytes read, from ``/proc/self/io`` around the child (Linux folds reaped children's
counters into their parent's): ``rchar`` counts every byte read() returned, including
pipes and sockets, ``read_bytes`` what came from the block device. The 1-minute load
average (``os.getloadavg``) is printed before and after each child: the machine is shared.

Also reported: the fixed cost before the first file (interpreter and imports, the runner
and its workers, listing), measured as runs of the CLI on a one-file archive in both local
modes and the import time alone; the DICOM bytes the extraction reads per file (exact,
in-process on a sample); with ``--memory-at OTHER``, the CLI's peak RSS on ``OTHER``
(e.g. 100,000 files) against ARCHIVE (e.g. 20,000), target at most 1.5x.

Targets (issue 11): (a)/(d) wall time <= 2.0; (a) CPU <= 1.0 ms per file.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import psutil

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DCMDUMP_HOW = "dcmdump not found: install DCMTK (Debian: apt-get update && apt-get install -y dcmtk)"


def proc_io() -> dict:
    with open("/proc/self/io", encoding="ascii") as stream:
        return {key: int(value) for key, value in (line.split(": ") for line in stream)}


def count_files(root: str) -> int:
    return sum(len(names) for _, _, names in os.walk(root))


def load() -> float:
    return os.getloadavg()[0]


def measure(command, interval: float = 0.1, shell: bool = False) -> dict:
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    load_before = load()
    before = proc_io()
    cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    child = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                             shell=shell)
    parent = psutil.Process(child.pid)
    peak = 0
    cpu_seen: dict = {}  # (pid, create time) -> last user + sys seen
    while child.poll() is None:
        total = 0
        try:
            tree = [parent] + parent.children(recursive=True)
        except psutil.NoSuchProcess:
            tree = []
        for process in tree:
            try:
                with process.oneshot():
                    total += process.memory_info().rss
                    times = process.cpu_times()
                    cpu_seen[(process.pid, process.create_time())] = times.user + times.system
            except psutil.NoSuchProcess:
                pass
        peak = max(peak, total)
        time.sleep(interval)
    seconds = time.perf_counter() - started
    after = proc_io()
    cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    waited = (cpu_after.ru_utime + cpu_after.ru_stime) - (cpu_before.ru_utime + cpu_before.ru_stime)
    if child.returncode != 0 and not shell:
        raise SystemExit(f"{command} failed with status {child.returncode}")
    return {
        "seconds": seconds,
        "cpu": max(waited, sum(cpu_seen.values())),
        "cpu_waited": waited,
        "cpu_sampled": sum(cpu_seen.values()),
        "peak_rss": peak,
        "rchar": after["rchar"] - before["rchar"],
        "read_bytes": after["read_bytes"] - before["read_bytes"],
        "load": (load_before, load()),
        "status": child.returncode,
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
    import transforms.reading.extract as extract
    from transforms.reading.flatten import FlattenSettings

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
            fn._read(path, os.path.getsize(path), os.path.getmtime(path))  # pylint: disable=protected-access
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


def fixed_cost(work: str, archive: str) -> dict:
    """Seconds of a CLI run on a one-file archive (both local modes), and of the imports."""
    one = os.path.join(work, "one-file")
    os.makedirs(one, exist_ok=True)
    first = next(os.path.join(folder, names[0]) for folder, _, names in os.walk(archive) if names)
    shutil.copy(first, os.path.join(one, "IM1"))
    cli = [sys.executable, "-m", "beam_pipeline", one, "--quiet"]
    runs = {
        "python + imports": measure([sys.executable, "-c", "import beam_pipeline.arguments, beam_pipeline.launch"]),
        "CLI, 1 file, in-process runner": measure(
            cli + ["-o", os.path.join(work, "one1.csv"), "--direct_running_mode=in_memory",
                   "--direct_num_workers=1"]),
        "CLI, 1 file, SDK worker processes": measure(
            cli + ["-o", os.path.join(work, "one2.csv"),
                   "--direct_running_mode=multi_processing", "--direct_num_workers=0"]),
    }
    started = time.perf_counter()
    from apache_beam.io.filesystems import FileSystems  # pylint: disable=import-outside-toplevel

    listed = len(FileSystems.match([os.path.join(archive, "**")])[0].metadata_list)
    runs["listing"] = {"seconds": time.perf_counter() - started, "files": listed}
    return runs


def summary_of(work: str, name: str) -> dict:
    try:
        with open(os.path.join(work, name + ".summary.json"), encoding="utf-8") as stream:
            return json.load(stream)
    except OSError:
        return {}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("archive")
    parser.add_argument("--runs", default="d,a,b",
                        help="comma-separated subset of d,a,a1,a2,b,c (default d,a,b; d runs "
                        "before and after the others)")
    parser.add_argument("--memory-at", help="a second (larger) archive: the CLI's peak RSS "
                        "there against ARCHIVE")
    parser.add_argument("--no-fixed-cost", action="store_true",
                        help="skip the one-file runs that measure the fixed cost")
    parser.add_argument("--work", help="folder for outputs (default: a temporary one)")
    parser.add_argument("--cli-args", default="", help="extra CLI flags for (a)")
    args = parser.parse_args(argv)
    archive = os.path.abspath(args.archive)
    work = args.work or tempfile.mkdtemp(prefix="dicom-bench-")
    os.makedirs(work, exist_ok=True)
    runs = args.runs.split(",")
    if "d" in runs and shutil.which("dcmdump") is None:
        raise SystemExit(DCMDUMP_HOW)
    files = count_files(archive)
    cores = os.cpu_count() or 1
    print(f"archive {archive}: {files} files; {cores} cores; load average "
          f"{'/'.join(f'{x:.1f}' for x in os.getloadavg())}", flush=True)
    dcmdump = (f"find {archive!r} -type f -print0 | xargs -0 -P{cores} -n 500 "
               f"dcmdump -M -q > /dev/null 2>&1")
    cli = [sys.executable, "-m", "beam_pipeline", archive, "--quiet"]
    commands = {
        "d": dcmdump,
        "a": cli + ["-o", os.path.join(work, "a.csv"), *args.cli_args.split()],
        "a1": cli + ["-o", os.path.join(work, "a1.csv"), "--direct_running_mode=in_memory",
                     "--direct_num_workers=1"],
        "a2": cli + ["-o", os.path.join(work, "a2.csv"),
                     "--direct_running_mode=multi_processing", "--direct_num_workers=0"],
        "b": [sys.executable, "-m", "benchmarks.baseline", archive, os.path.join(work, "b.csv")],
        "c": [sys.executable, "-m", "benchmarks.floor", archive],
    }
    labels = {
        "d": "(d) dcmdump -M, all cores (anchor)",
        "d2": "(d) dcmdump -M, again after the others",
        "a": "(a) dicom-meta-extract CLI, defaults",
        "a1": "(a1) CLI, in-process runner",
        "a2": "(a2) CLI, SDK worker processes",
        "b": "(b) replaced script's method",
        "c": "(c) pydicom floor, 1 process",
    }
    order = [key for key in runs if key != "d"]
    schedule = (["d"] if "d" in runs else []) + order + (["d2"] if "d" in runs else [])
    results = {}
    for key in schedule:
        command = commands["d" if key == "d2" else key]
        results[key] = measure(command, shell=key in ("d", "d2"))
        r = results[key]
        print(f"{labels[key]}: {r['seconds']:.1f} s, load {r['load'][0]:.1f} -> "
              f"{r['load'][1]:.1f}", flush=True)
    anchor = None
    if "d" in results:
        anchor = statistics.mean([results["d"]["seconds"], results["d2"]["seconds"]])
    base = results.get("b", {}).get("seconds")
    print()
    anchor_cpu = None
    if "d" in results:
        anchor_cpu = statistics.mean([results["d"]["cpu"], results["d2"]["cpu"]])
    print("| run | seconds | x dcmdump | x (b) | files/s | CPU ms/file (tree) | CPU x dcmdump "
          "| peak RSS (tree) | rchar/file | load 1-min |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for key, r in results.items():
        ratio = f"{r['seconds'] / anchor:.2f}" if anchor else "-"
        to_base = f"{r['seconds'] / base:.2f}" if base else "-"
        cpu_ratio = f"{r['cpu'] / anchor_cpu:.2f}" if anchor_cpu else "-"
        print(f"| {labels[key]} | {r['seconds']:.1f} | {ratio} | {to_base} | "
              f"{files / r['seconds']:,.0f} | {1000 * r['cpu'] / files:.2f} | {cpu_ratio} | "
              f"{r['peak_rss'] / 2**20:,.0f} MiB | {r['rchar'] / files / 1024:,.1f} KiB | "
              f"{r['load'][0]:.1f}-{r['load'][1]:.1f} |")
    if "a" in results:
        a = results["a"]
        print()
        if anchor:
            print(f"(a) / dcmdump wall time: {a['seconds'] / anchor:.2f} (target <= 2.0; "
                  f"dcmdump runs {results['d']['seconds']:.1f} s and "
                  f"{results['d2']['seconds']:.1f} s)")
        print(f"(a) CPU per file, whole tree: {1000 * a['cpu'] / files:.2f} ms (target <= 1.0; "
              f"waited-for {a['cpu_waited']:.1f} s, sampled {a['cpu_sampled']:.1f} s)")
        if base:
            print(f"(a) is {base / a['seconds']:.1f}x as fast as (b)")
        summary = summary_of(work, "a")
        if summary:
            print(f"(a) summary: {summary.get('rows')} rows, {summary.get('errors')} errors, "
                  f"{summary.get('non_dicom_skipped')} skipped; lean reader "
                  f"{summary.get('lean_reader_rows')} rows, "
                  f"{summary.get('lean_reader_fallbacks')} fallbacks to pydicom")
        read, header, excess = dicom_bytes_per_file(archive)
        print(f"ExtractHeaders reads {read / 1024:.1f} KiB of DICOM per file "
              f"(exact, 200-file sample) for a {header / 1024:.1f} KiB header; "
              f"at most {excess / 1024:.1f} KiB past the header")
    if not args.no_fixed_cost:
        print("\nFixed cost before the first file (one-file archive):")
        for label, r in fixed_cost(work, archive).items():
            extra = f", {r['files']} files" if "files" in r else (
                f", CPU {r['cpu']:.1f} s, peak RSS {r['peak_rss'] / 2**20:,.0f} MiB")
            print(f"  {label}: {r['seconds']:.2f} s{extra}")
    if args.memory_at:
        other = os.path.abspath(args.memory_at)
        other_files = count_files(other)
        first = results.get("a") or measure(commands["a"])
        second = measure(cli[:3] + [other, "--quiet", "-o", os.path.join(work, "m.csv")])
        print(f"\nMemory: (a) peak RSS {first['peak_rss'] / 2**20:,.0f} MiB at {files:,} files, "
              f"{second['peak_rss'] / 2**20:,.0f} MiB at {other_files:,} files: "
              f"{second['peak_rss'] / first['peak_rss']:.2f}x (target <= 1.5x); "
              f"{other_files:,} files took {second['seconds']:.1f} s, "
              f"{1000 * second['cpu'] / other_files:.2f} CPU ms/file, load "
              f"{second['load'][0]:.1f}-{second['load'][1]:.1f}")
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
